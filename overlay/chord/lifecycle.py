"""The node's lifecycle, one table (as h11's _state.py): the states and the allowed
transitions; `Lifecycle._enter` raises on any other. A node is a member of a ring from its
first instant (a ring of one until it joins or is found); joining is pending work
(`membership._Join`), not a state, so a node that is joining still answers its peers as
the ring it is (boxes powered on together each ask the others while those are joining
too). What stood beside the status as flags is derived: `joining`, `join_failed`."""

from __future__ import annotations

MEMBER = "member"  # on a ring (possibly a ring of one)
LEAVING = "leaving"  # handing over records and telling its neighbours
LEFT = "left"  # gone: ignores everything
_TRANSITIONS: dict[str, frozenset[str]] = {
    MEMBER: frozenset({LEAVING}),
    LEAVING: frozenset({LEFT}),
    LEFT: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class Lifecycle:
    """`status` and the values derived from it and the pending join."""

    status: str = MEMBER

    def _enter(self, state: str) -> None:
        if state not in _TRANSITIONS[self.status]:
            raise IllegalTransition(f"{self.status} -> {state}")
        self.status = state

    @property
    def joining(self) -> bool:
        return self._join is not None

    @property
    def join_failed(self) -> bool:
        """Alone because a join failed (until a peer's merge check or ours finds a ring)."""
        return self.join_gave_up and not self.successors
