"""The proxy's front: the transaction layer's events in, to the part that owns them.

`Proxy` wires the parts together and is all the node (and the tests) talk to: requests go
to intake.py, responses and branch failures to the response contexts (context.py), stray
responses to stateless.py, the silent-box timer to boxes.py, Timer C to context.py and
closed.py. What the node plugs in later (name resolution, the mesh) is set here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

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

T = TypeVar("T")


class _Plugged(Generic[T]):
    """An attribute of the proxy kept, under the same name, by one of its parts."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, proxy: Proxy | None, owner: type | None = None) -> T:
        if proxy is None:
            return self  # type: ignore[return-value]  # looked up on the class
        return getattr(getattr(proxy, self.part), self.name)  # type: ignore[no-any-return]

    def __set__(self, proxy: Proxy, value: T) -> None:
        setattr(getattr(proxy, self.part), self.name, value)


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

    # What the node plugs in after construction; each lives in the part that uses it.
    address: _Plugged[Callable[[str], str | None]] = _Plugged("hops")  # host -> IP, no waiting
    resolve: _Plugged[Resolve | None] = _Plugged("intake")
    find_remote: _Plugged[FindRemote | None] = _Plugged("boxes")
    forget_remote: _Plugged[ForgetRemote | None] = _Plugged("boxes")

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
