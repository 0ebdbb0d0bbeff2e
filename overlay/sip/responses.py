"""Building responses to requests (RFC 3261 8.2.6)."""

from __future__ import annotations

from .message import Request, Response, parse_headers
from .uri import NameAddr

REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 407: "Proxy Authentication Required", 408: "Request Timeout",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    600: "Busy Everywhere", 603: "Decline",
}
_COPIED = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    if to_tag is not None and status > 100:
        to = request._to_view()  # shared with the request: not changed here
        if to.tag is None:
            tagged = str(NameAddr(to.uri, to.display, {**to.params, "tag": to_tag}))
            headers = [
                ("To", tagged) if n == "To" else (n, v) for n, v in request.headers if n in _COPIED
            ]
            return Response(status, reason or REASONS.get(status, ""), headers)
    headers = [(n, v) for n, v in request.headers if n in _COPIED]
    return Response(status, reason or REASONS.get(status, ""), headers)


def salvage_error_response(data: bytes, status: int, reason: str) -> Response | None:
    """A response to a request that failed to parse, when enough of it is readable.

    Only the headers a response must echo are needed; anything else may be broken.
    Returns None for responses and for requests too damaged to answer.
    """
    text = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/"):
        return None
    headers = []
    for line in lines[1:]:
        try:
            headers.extend(h for h in parse_headers([line]) if h[0] in _COPIED)
        except ValueError:
            continue
    names = {n for n, _ in headers}
    if not all(n in names for n in _COPIED):
        return None
    # The echoed headers may be the malformed ones; the reason phrase names the fault.
    reason = reason.replace("\r", " ").replace("\n", " ")[:120]
    return Response(status, reason, headers)
