"""The proxy's front: the transaction layer's events in, to the part that owns them.

`Proxy` wires the parts together and is all the node (and the tests) talk to: requests go
to intake.py, responses and branch failures to the response contexts (context.py), stray
responses to stateless.py, the silent-box timer to boxes.py, Timer C to context.py and
closed.py. What the node plugs in later (name resolution, the mesh) is set here too.
"""

from __future__ import annotations

from collections.abc import Callable

from overlay.sip.transaction import (
    ClientTimeout,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTerminated,
    StrayResponse,
    TransactionLayer,
    TransportFailed,
)

from ..addresses import OwnAddresses
from ..registrar import Location
from .boxes import Boxes, FindRemote, ForgetRemote
from .calls import Call, Calls
from .closed import ClosedBranches
from .context import Branch, Contexts, ProxiedRequest
from .hops import Hops, LocalAddress
from .intake import Intake, Resolve
from .stateless import Stateless


class Proxy:
    def __init__(
        self,
        txl: TransactionLayer,
        location: Location,
        local_address: LocalAddress,
        node_token: str,
        own: OwnAddresses | None = None,
    ) -> None:
        self.txl = txl
        self.location = location
        self.counters = {"requests": 0, "forwarded": 0, "registrations": 0, "calls": 0,
                         "stray_forwarded": 0, "dropped": 0, "responses_not_ours": 0,
                         "stray_2xx_ended": 0}
        own = own if own is not None else OwnAddresses("", 0)  # knows no address
        self.hops = Hops(local_address, node_token, own)
        self.call_table = Calls(self.counters)
        self.closed = ClosedBranches(txl, self.hops, self.counters)
        self.stateless = Stateless(txl, self.hops, self.call_table, self.closed, self.counters)
        self.contexts = Contexts(txl, self.hops, self.call_table, self.closed, self.stateless,
                                 self.counters)
        self.boxes = Boxes(txl, location, self.hops, self.call_table, self.contexts)
        self.intake = Intake(txl, location, self.hops, self.contexts, self.boxes,
                             self.stateless, self.call_table, self.counters)

    # -- what the node plugs in -----------------------------------------------------------
    @property
    def address(self) -> Callable[[str], str | None]:
        """Host name -> IP address from what is known now (no waiting)."""
        return self.hops.address

    @address.setter
    def address(self, address: Callable[[str], str | None]) -> None:
        self.hops.address = address

    @property
    def resolve(self) -> Resolve | None:
        return self.intake.resolve

    @resolve.setter
    def resolve(self, resolve: Resolve | None) -> None:
        self.intake.resolve = resolve

    @property
    def find_remote(self) -> FindRemote | None:
        return self.boxes.find_remote

    @find_remote.setter
    def find_remote(self, find_remote: FindRemote | None) -> None:
        self.boxes.find_remote = find_remote

    @property
    def forget_remote(self) -> ForgetRemote | None:
        return self.boxes.forget_remote

    @forget_remote.setter
    def forget_remote(self, forget_remote: ForgetRemote | None) -> None:
        self.boxes.forget_remote = forget_remote

    # -- state, read by the node's status and by tests -------------------------------------
    @property
    def calls(self) -> dict[str, Call]:
        return self.call_table.table

    @property
    def by_server(self) -> dict[object, ProxiedRequest]:
        return self.contexts.by_server

    @property
    def pending(self) -> dict[object, tuple[ProxiedRequest, Branch]]:
        return self.contexts.pending

    def status(self, now: float) -> list[dict[str, object]]:
        return self.call_table.status(now)

    # -- events and time --------------------------------------------------------------------
    def handle(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self.intake.receive(event, now)
        elif isinstance(event, ResponseReceived):
            self.contexts.on_response(event.response, event.client_key, now)
        elif isinstance(event, StrayResponse):
            self.stateless.on_stray(event.response, event.source, now)
        elif isinstance(event, (ClientTimeout, TransportFailed)):
            self.contexts.on_branch_failure(event.client_key,
                                            isinstance(event, ClientTimeout), now)
        elif isinstance(event, ServerTerminated):
            self.contexts.by_server.pop(event.server_key, None)

    def get_timer(self) -> float | None:
        """When handle_timer wants to run next (None: nothing to wait for)."""
        return self.boxes.get_timer()

    def handle_timer(self, now: float) -> None:
        self.boxes.handle_timer(now)

    def expire(self, now: float) -> None:
        """Timer C; and closed branches whose callee has stopped retransmitting any 2xx."""
        self.closed.expire(now)
        self.contexts.expire(now)
