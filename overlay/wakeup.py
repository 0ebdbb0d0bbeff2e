"""One event-loop timer for a sans-IO core (the aioquic pattern: ask get_timer, arm it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Wakeup:
    """Calls `callback` at the earliest deadline asked for since it last fired.

    A later deadline than the armed one is ignored: the callback re-arms after it runs.
    """

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def at(self, when: float | None) -> None:
        if when is None or (self._at is not None and self._at <= when):
            return
        self.cancel()
        self._at = when
        self._handle = asyncio.get_running_loop().call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = None

    def _fire(self) -> None:
        self._handle = self._at = None
        self._callback()
