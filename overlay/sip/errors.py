"""Errors raised by the SIP core."""


class SipParseError(ValueError):
    """A message (or part of one) that does not follow the RFC 3261 grammar.

    `status` is the response a server should send when the bad part is in a
    request: 400 for syntax, 505 for an unsupported SIP version.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
