"""Message mapping: overlay messages (`overlay.chord.messages`) <-> SIP requests/responses.

A request goes to the next hop's node URI, its `To` URI naming the operation (`op`) and
its arguments; a response copies Via, From, Call-ID and CSeq of the request it answers
(kept here for a while, keyed by requester and txn; rebuilt when forgotten). The table
of messages, their SIP form and an example: docs/overlay-wire-format.md, "Mapping".
Signing and certificates are added by the codec; this module knows nothing of keys.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...sip.message import Request, Response
from ...sip.uri import NameAddr, Uri, parse_name_addr
from .. import messages as m
from .bodies import encode_records, records_of
from .values import (
    ALGORITHM,
    CALL_ID,
    DIGITS,
    HEX_ID,
    LINK_HEADER,
    MAX_COUNT,
    NODEID_HEADER,
    RECORDS_TYPE,
    WireError,
    check_count,
    check_id,
    hostport,
    make_room,
    node_uri,
    ref_from_uri,
)

Headers = list[tuple[str, str]]
_LINK_S = re.compile(r"S([1-9][0-9]{0,3})\Z")

# op names in To URIs, per request type.
REQUEST_OPS: dict[type, str] = {
    m.Ping: "ping", m.GetNeighbors: "neighbors", m.Notify: "notify", m.FindSuccessor: "find",
    m.Store: "store", m.Transfer: "transfer", m.Fetch: "fetch", m.Leave: "leave",
    m.Learn: "learn",
}
# Ops a response type may answer; the first is used when no request is remembered.
_RESPONSE_OPS: dict[type, tuple[str, ...]] = {
    m.Pong: ("ping",), m.Ack: ("notify", "leave", "learn"), m.Neighbors: ("neighbors",),
    m.Found: ("find",), m.Redirect: ("find",), m.Stored: ("store", "transfer"),
    m.Records: ("fetch",), m.Error: (),
}
_OK_TYPES = {
    "ping": m.Pong, "neighbors": m.Neighbors, "notify": m.Ack, "leave": m.Ack, "learn": m.Ack,
    "find": m.Found, "store": m.Stored, "transfer": m.Stored, "fetch": m.Records,
}
_OPS = frozenset(_OK_TYPES)


@dataclass(slots=True)
class _Remembered:
    """What a response needs from the request it answers."""

    at: float
    op: str
    vias: list[str]
    from_: str
    to_uri: Uri
    call_id: str
    cseq: str


class Mapping:
    """The SIP form of one overlay's messages, and the requests a response will answer
    (at most `remember` of them, for `remember_for` seconds)."""

    def __init__(self, overlay: str, remember: int, remember_for: float) -> None:
        self.overlay = overlay
        self.remember_capacity = remember
        self.remember_for = remember_for
        self._requests: OrderedDict[tuple[int, int], _Remembered] = OrderedDict()

    # ------------------------------------------------------------------ to SIP

    def _node_id(self, src: m.NodeRef) -> Headers:
        return [(NODEID_HEADER, f"<{node_uri(src)}>;algorithm={ALGORITHM};overlay={self.overlay}")]

    def request(
        self, msg: m.Message, dst: m.NodeRef | tuple[str, int], certs: Callable[[], Headers],
    ) -> Request:
        """The unsigned SIP request; `certs()` gives the certificate headers."""
        op = REQUEST_OPS[type(msg)]
        method = "OPTIONS" if op == "ping" else "REGISTER"
        src, txn = msg.src, msg.txn
        to_params: dict[str, str | None] = {"op": op}
        extra: Headers = []
        body = b""
        if isinstance(msg, m.Notify):
            extra.append(("Contact", f"<{node_uri(src)}>"))
        elif isinstance(msg, m.FindSuccessor):
            to_params["resource-id"] = f"{check_id(msg.key, 'key'):032x}"
            _hops(to_params, msg.hops)
            if msg.recursive:
                to_params["recursive"] = None
            if msg.origin is not None:
                extra.append((LINK_HEADER, _link(msg.origin, "O")))
        elif isinstance(msg, m.Store | m.Transfer):
            if isinstance(msg, m.Store) and msg.replica:
                to_params["replica"] = None
            body = encode_records(msg.records)
        elif isinstance(msg, m.Fetch):
            to_params["resource-id"] = f"{check_id(msg.resource_id, 'resource_id'):032x}"
        elif isinstance(msg, m.Leave):
            extra.append(("Contact", f"<{node_uri(src)}>;expires=0"))
            extra += _links(msg.predecessor, msg.successors)
        elif isinstance(msg, m.Learn):
            _hops(to_params, msg.hops)
            extra.append(("Contact", f"<{node_uri(msg.candidate)}>"))
        headers = [
            ("Via", f"SIP/2.0/UDP {hostport(src)};branch={_branch(src.id, txn)}"),
            ("Max-Forwards", "70"),
            ("From", f"<{node_uri(src)}>;tag={txn:x}"),
            ("To", f"<{node_uri(dst, **to_params)}>"),
            ("Call-ID", f"{txn:x}@{src.id:032x}"),
            ("CSeq", f"{txn & 0x7FFFFFFF} {method}"),
            *self._node_id(src),
            *extra,
            *certs(),
        ]
        if body:
            headers.append(("Content-Type", RECORDS_TYPE))
        return Request(method, node_uri(dst, overlay=self.overlay), headers, body)

    def response(self, msg: m.Message, dst: m.NodeRef, certs: Callable[[], Headers]) -> Response:
        """The unsigned SIP response to `dst` (the requester); `certs()` as for requests."""
        src, txn = msg.src, msg.txn
        remembered = self._requests.pop((dst.id, txn), None)
        allowed = _RESPONSE_OPS[type(msg)]
        op: str | None
        if remembered is not None and (not allowed or remembered.op in allowed):
            op = remembered.op
        else:
            op = allowed[0] if allowed else None
        to_params: dict[str, str | None] = {} if op is None else {"op": op}
        status, reason, extra, body = _response_fields(msg, to_params)
        if remembered is not None:
            to_uri = remembered.to_uri.copy(params={"user": "node", **to_params})
            vias, from_ = remembered.vias, remembered.from_
            call_id, cseq = remembered.call_id, remembered.cseq
        else:
            method = "OPTIONS" if op == "ping" else "REGISTER"
            to_uri = node_uri(src, **to_params)
            vias = [f"SIP/2.0/UDP {hostport(dst)};branch={_branch(dst.id, txn)}"]
            from_ = f"<{node_uri(dst)}>;tag={txn:x}"
            call_id, cseq = f"{txn:x}@{dst.id:032x}", f"{txn & 0x7FFFFFFF} {method}"
        headers = [
            *[("Via", v) for v in vias],
            ("From", from_),
            ("To", f"<{to_uri}>;tag={src.id >> 96:08x}"),
            ("Call-ID", call_id),
            ("CSeq", cseq),
            *self._node_id(src),
            *extra,
            *certs(),
        ]
        if body:
            headers.append(("Content-Type", RECORDS_TYPE))
        return Response(status, reason, headers, body)

    # ------------------------------------------------------------------ from SIP

    @staticmethod
    def sender(sip: Request | Response) -> tuple[Uri, dict[str, str | None]]:
        """The DHT-NodeID header's node URI and parameters (ValueError if not one)."""
        values = sip.get_all(NODEID_HEADER)
        if len(values) != 1:
            raise ValueError(f"need exactly one {NODEID_HEADER}")
        node = parse_name_addr(values[0], NODEID_HEADER)
        if node.params.get("algorithm") != ALGORITHM:
            raise ValueError(f"{NODEID_HEADER} algorithm is not {ALGORITHM}")
        return node.uri, node.params

    def names_overlay(self, sip: Request | Response, params: dict[str, str | None]) -> bool:
        """Whether the message (DHT-NodeID `params`, a request's Request-URI) is ours."""
        return params.get("overlay") == self.overlay and (
            not isinstance(sip, Request) or sip.uri.params.get("overlay") == self.overlay
        )

    @staticmethod
    def check_destination(sip: Request | Response, message: m.Message | None, me: int) -> None:
        """Refuse (`misdirected`) a request for another Node-ID, or a response to another
        node's request."""
        if isinstance(sip, Request):
            user = sip.uri.user
            if user is not None and (not HEX_ID.match(user) or int(user, 16) != me):
                raise WireError("misdirected", "request for another node", message)
        else:
            requester = CALL_ID.match(sip.call_id)
            if requester is None or int(requester.group(2), 16) != me:
                raise WireError("misdirected", "response to another node's request", message)

    def remember(self, sip: Request, message: m.Message, now: float) -> None:
        """Keep what the answer to this (accepted) request copies from it."""
        make_room(self._requests, now, self.remember_capacity, self.remember_for)
        to = parse_name_addr(sip.get("To") or "", "To")
        self._requests[(message.src.id, message.txn)] = _Remembered(
            now, REQUEST_OPS[type(message)], sip.get_all("Via"), sip.get("From") or "",
            to.uri, sip.call_id, sip.get("CSeq") or "",
        )

    def build(self, sip: Request | Response, src: m.NodeRef) -> m.Message:
        """The overlay message `sip` (sent by `src`) is; ValueError (and the like) if none."""
        call = CALL_ID.match(sip.call_id)
        if call is None:
            raise ValueError("Call-ID is not <txn>@<requester Node-ID>")
        txn = int(call.group(1), 16)
        params = parse_name_addr(sip.get("To") or "", "To").uri.params
        op = params.get("op")
        base: dict[str, Any] = {"src": src, "txn": txn, "overlay": self.overlay}
        links = _parse_links(sip)
        contacts = [c for c in sip.contacts() if c is not None]
        if len(contacts) != len(sip.get_all("Contact")):
            raise ValueError("Contact: * in an overlay message")
        if isinstance(sip, Request):
            if int(call.group(2), 16) != src.id:
                raise ValueError("Call-ID names another node than DHT-NodeID")
            if op not in _OPS or (sip.method == "OPTIONS") != (op == "ping") or (
                sip.method not in ("OPTIONS", "REGISTER")
            ):
                raise ValueError(f"bad op {op!r} for {sip.method}")
            if sip.cseq[1] != sip.method:
                raise ValueError("CSeq method")
            return _build_request(sip, op, params, base, links, contacts)
        if op is not None and op not in _OPS:
            raise ValueError(f"bad op {op!r}")
        return _build_response(sip, op, params, base, links, contacts)


# ---------------------------------------------------------------------- helpers


def _branch(requester: int, txn: int) -> str:
    return f"z9hG4bK-{requester >> 64:016x}-{txn:x}"


def _link(ref: m.NodeRef, link: str) -> str:
    return f"<{node_uri(ref)}>;link={link}"


def _links(pred: m.NodeRef | None, succs: tuple[m.NodeRef, ...]) -> Headers:
    links = [] if pred is None else [(LINK_HEADER, _link(pred, "P"))]
    if len(succs) > 9999:
        raise ValueError("too many successors")
    links += [(LINK_HEADER, _link(s, f"S{i}")) for i, s in enumerate(succs, 1)]
    return links


def _hops(to_params: dict[str, str | None], hops: int) -> None:
    if hops:
        to_params["hops"] = str(check_count(hops, "hops"))


def _response_fields(
    msg: m.Message, to_params: dict[str, str | None],
) -> tuple[int, str, Headers, bytes]:
    """A response's status, reason, its own headers and body (its To params are added
    to `to_params`)."""
    status, reason = 200, "OK"
    extra: Headers = []
    body = b""
    if isinstance(msg, m.Neighbors):
        extra += _links(msg.predecessor, msg.successors)
    elif isinstance(msg, m.Found | m.Redirect):
        to_params["resource-id"] = f"{check_id(msg.key, 'key'):032x}"
        _hops(to_params, msg.hops)
        if isinstance(msg, m.Found):
            extra += _links(None, msg.successors)
        else:
            status, reason = 302, "Moved Temporarily"
            extra += [("Contact", f"<{node_uri(c)}>") for c in msg.closer]
    elif isinstance(msg, m.Stored):
        if msg.accepted:
            to_params["accepted"] = str(check_count(msg.accepted, "accepted"))
        if msg.rejected:
            to_params["rejected"] = str(check_count(msg.rejected, "rejected"))
        if msg.in_use:
            to_params["in-use"] = str(check_count(msg.in_use, "in_use"))
    elif isinstance(msg, m.Records):
        to_params["resource-id"] = f"{check_id(msg.resource_id, 'resource_id'):032x}"
        body = encode_records(msg.records)
    elif isinstance(msg, m.Error):
        if not (300 <= msg.code <= 699) or msg.code == 302:
            raise ValueError(f"Error code {msg.code} must be 300-699 and not 302")
        status = msg.code
        reason = re.sub(r"[\x00-\x1f\x7f]", " ", msg.reason)
    return status, reason, extra, body


def _only(links: dict[str, Any], allowed: tuple[str, ...]) -> None:
    present = {k for k, v in links.items() if v}
    if present - set(allowed):
        raise ValueError(f"unexpected links {sorted(present - set(allowed))}")


def _int_param(params: dict[str, str | None], name: str, limit: int = MAX_COUNT) -> int:
    value = params.get(name)
    if value is None:
        return 0
    if not DIGITS.match(value) or int(value) >= limit:
        raise ValueError(f"bad {name}")
    return int(value)


def _key_param(params: dict[str, str | None]) -> int:
    value = params.get("resource-id")
    if value is None or not HEX_ID.match(value):
        raise ValueError("missing or bad resource-id")
    return int(value, 16)


def _parse_links(sip: Request | Response) -> dict[str, Any]:
    links: dict[str, Any] = {}
    succs: list[m.NodeRef] = []
    for value in sip.get_all(LINK_HEADER):
        na = parse_name_addr(value, LINK_HEADER)
        kind = na.params.get("link") or ""
        ref = ref_from_uri(na.uri, LINK_HEADER)
        s = _LINK_S.match(kind)
        if s:
            if int(s.group(1)) != len(succs) + 1:
                raise ValueError("successor links out of order")
            succs.append(ref)
        elif kind in ("P", "O") and kind not in links:
            links[kind] = ref
        else:
            raise ValueError(f"bad or repeated link {kind!r}")
    links["S"] = tuple(succs)
    return links


def _build_request(
    sip: Request, op: str, params: dict[str, str | None], base: dict[str, Any],
    links: dict[str, Any], contacts: list[NameAddr],
) -> m.Message:
    if op == "find":
        _only(links, ("O",))
        return m.FindSuccessor(
            **base, key=_key_param(params), recursive="recursive" in params,
            hops=_int_param(params, "hops"), origin=links.get("O"),
        )
    if op == "leave":
        _only(links, ("P", "S"))
        return m.Leave(**base, predecessor=links.get("P"), successors=links["S"])
    _only(links, ())
    if op == "learn":
        if len(contacts) != 1:
            raise ValueError("learn needs one Contact")
        return m.Learn(**base, candidate=ref_from_uri(contacts[0].uri, "Contact"),
                       hops=_int_param(params, "hops"))
    if op == "store":
        return m.Store(**base, records=records_of(sip), replica="replica" in params)
    if op == "transfer":
        return m.Transfer(**base, records=records_of(sip))
    if op == "fetch":
        return m.Fetch(**base, resource_id=_key_param(params))
    return {"ping": m.Ping, "neighbors": m.GetNeighbors, "notify": m.Notify}[op](**base)


def _build_response(
    sip: Response, op: str | None, params: dict[str, str | None], base: dict[str, Any],
    links: dict[str, Any], contacts: list[NameAddr],
) -> m.Message:
    if sip.status == 302:
        if op != "find":
            raise ValueError("302 to something else than a lookup")
        _only(links, ())
        return m.Redirect(**base, key=_key_param(params), hops=_int_param(params, "hops"),
                          closer=tuple(ref_from_uri(c.uri, "Contact") for c in contacts))
    if 300 <= sip.status <= 699:
        return m.Error(**base, code=sip.status, reason=sip.reason)
    if sip.status != 200 or op is None:
        raise ValueError(f"unexpected status {sip.status}")
    kind = _OK_TYPES[op]
    if kind is m.Neighbors:
        _only(links, ("P", "S"))
        return m.Neighbors(**base, predecessor=links.get("P"), successors=links["S"])
    if kind is m.Found:
        _only(links, ("S",))
        return m.Found(**base, key=_key_param(params), successors=links["S"],
                       hops=_int_param(params, "hops"))
    if kind is m.Stored:
        return m.Stored(**base, accepted=_int_param(params, "accepted"),
                        rejected=_int_param(params, "rejected"),
                        in_use=_int_param(params, "in-use"))
    if kind is m.Records:
        return m.Records(**base, resource_id=_key_param(params), records=records_of(sip))
    return kind(**base)  # Pong, Ack
