"""Digest registration policy: phones prove they know their extension's password."""

from __future__ import annotations

import logging

from overlay.sip.digest import DigestError, DigestServer, Verdict, parse_credentials
from overlay.sip.errors import SipParseError
from overlay.sip.message import Request, Response
from overlay.sip.responses import make_response
from overlay.sip.routing import new_tag
from overlay.sip.uri import parse_uri

log = logging.getLogger("meshsip.auth")


class DigestPolicy:
    def __init__(self, users: dict[str, str], realm: str, secret: bytes,
                 algorithms: tuple[str, ...]) -> None:
        self.users = users
        self.server = DigestServer(realm, secret, algorithms=algorithms)

    def __call__(self, request: Request, now: float) -> Response | None:
        """None when the REGISTER carries valid credentials for its To extension."""
        extension = request.to.uri.user or ""
        stale = False
        for value in request.get_all("Authorization"):
            try:
                creds = parse_credentials(value)
            except DigestError as exc:
                return make_response(request, 400, f"Bad Authorization: {exc.reason}", new_tag())
            if creds.realm != self.server.realm:
                continue  # credentials for some other realm
            password = self.users.get(creds.username)
            if creds.username != extension or password is None:
                log.warning("refused REGISTER for %s: credentials are for %r",
                            extension, creds.username)
                return make_response(request, 403, "Wrong user for this extension", new_tag())
            if not _same_uri(creds.uri, request):
                return make_response(request, 400, "Digest uri does not match", new_tag())
            verdict = self.server.verify(creds, request.method, password, now)
            if verdict is Verdict.OK:
                return None
            stale = verdict is Verdict.STALE_NONCE
            if verdict is Verdict.WRONG_RESPONSE:
                log.warning("wrong password for extension %s", extension)
        response = make_response(request, 401, None, new_tag())
        for challenge in self.server.challenge(now, stale=stale):
            response.add("WWW-Authenticate", challenge)
        return response


def _same_uri(text: str, request: Request) -> bool:
    try:
        return parse_uri(text) == request.uri
    except SipParseError:
        return False
