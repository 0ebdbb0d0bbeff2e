"""A new extension on this box is a claim on it, mesh-wide (docs/architecture.md,
"Extensions are owned mesh-wide").

The registrar does not bind an extension it holds no live binding for until the mesh has
answered: `Location.register` returns a `PendingClaim`, the node asks the storing node
(`Mesh.claim`), and a `ClaimAnswer` (the pending work, one way to finish) answers the
phone: 200 once the claim is accepted (or when no storing node could be reached: the box
stays available and the claim settles when the ring heals), 403 when the extension is
another box's. A 100 Trying goes out if the answer takes longer than `TRYING_AFTER`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from overlay.sip.message import Request
from overlay.sip.responses import make_response
from overlay.sip.routing import Address
from overlay.sip.transaction import PROCEEDING, TRYING, TransactionLayer
from overlay.sip.uri import NameAddr

if TYPE_CHECKING:
    from .registrar import Binding, Location

TRYING_AFTER = 0.5  # seconds before a REGISTER waiting for its claim gets 100 Trying
CLAIMS_MAX = 256  # claims in flight on one box; more REGISTERs get 503 meanwhile
ACCEPTED, IN_USE, UNREACHED = "accepted", "in use", "unreached"  # what the mesh answers


def instance_hash(contacts: list[NameAddr | None]) -> str:
    """A hash of the phone's `+sip.instance` (RFC 5626), "" when it sent none: the proof
    that a phone registering on another box is the same phone."""
    for na in contacts:
        value = na.params.get("+sip.instance") if na is not None else None
        if value:
            text = value.strip('"').strip("<>").lower()
            return hashlib.sha256(text.encode()).hexdigest()[:32]
    return ""


@dataclass(eq=False)
class PendingClaim:
    """A REGISTER that would give this box an extension, waiting for the mesh."""

    extension: str
    bindings: list[Binding]
    request: Request
    source: Address
    tag: str
    instance: str  # instance_hash of its contacts
    verified: bool  # the phone gave its digest password
    answered: bool = field(default=False)


@dataclass(eq=False)
class ClaimAnswer:
    """Answers one pending claim's REGISTER through its server transaction."""

    txl: TransactionLayer
    location: Location
    pending: PendingClaim
    key: object

    def trying(self, now: float) -> None:
        if not self.pending.answered and self._open():
            self.txl.send_response(make_response(self.pending.request, 100), self.key, now)

    def __call__(self, outcome: str, now: float) -> None:
        response = self.location.settle(self.pending, outcome, now)
        if self._open():
            self.txl.send_response(response, self.key, now)

    def _open(self) -> bool:
        return self.txl.server_state(self.key) in (TRYING, PROCEEDING)


# Starts the mesh claim; calls the answer once, with ACCEPTED, IN_USE or UNREACHED.
StartClaim = Callable[[PendingClaim, ClaimAnswer], None]
