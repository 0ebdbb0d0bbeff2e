"""Every bound a box puts on what the network can make it hold or do, in one place.

Defaults are sized for a Raspberry Pi 3 (1 GiB): the tables below, all full, stay within
a few hundred MiB, and one source alone cannot take the box's whole capacity.

What happens over a limit, and why:
- a source over its message rate: the datagram is dropped before it is parsed, and
  counted. Answering (503) would cost a parse and a send per flood datagram, and what
  floods ignores answers anyway; a real phone retransmits (Timer A/E) and gets through
  when its bucket refills.
- a table full (bindings, server transactions): 503 with Retry-After. This is rare for a
  well-behaved phone and tells it to wait, where silence would bring up to ten
  retransmissions each costing a parse.
- a source over its bindings: its own oldest bindings go. It cannot fill the table, and a
  phone at that address (behind the same NAT) is served again once the flood stops.
- a lookup that found nobody: remembered for `negative_seconds`, so a flood of calls to
  an extension nobody serves asks the ring once per that time.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.ratelimit import SourceLimiter

from .registrar import BindingCaps


@dataclass(frozen=True)
class Limits:
    # SIP from phones (and boxes' forwarded calls): per source IP, before parsing.
    sip_rate: float = 100.0  # messages a second, sustained (a box's forwarded calls: ~15/s)
    sip_burst: float = 300.0
    # Overlay messages (signed, box to box): per source IP, at the overlay service. A ring
    # forming sends tens a second per box; this is far above that.
    overlay_rate: float = 500.0
    overlay_burst: float = 2000.0
    sources_tracked: int = 4096  # token buckets kept (least recently used out)
    exempt_loopback: bool = True  # the box's own tools and benchmarks are not limited
    # Registrar.
    max_bindings: int = 60_000  # contacts in all (the benchmark holds 40,000)
    max_bindings_per_source: int = 1000  # contacts registered from one IP address
    max_contacts_per_extension: int = 10  # each is a branch of every call (a fork)
    max_known: int = 100_000  # extensions remembered as once seen (480 rather than 404)
    # Transactions.
    max_server_transactions: int = 20_000  # live ones, before Timer J's shrunk table
    max_invite_servers: int = 2_000  # calls being set up at once
    retry_after: int = 5  # seconds, in every 503
    # Proxy and mesh.
    max_calls: int = 4_096  # calls listed in the status (ringing or up), oldest out
    negative_seconds: float = 3.0  # an extension nobody serves is not looked up again
    max_cached_lookups: int = 4_096  # positive and negative answers kept
    # Persistence: the bindings file is written at most this often (and at a clean stop).
    bindings_save_seconds: float = 30.0


LOOPBACK = frozenset({"127.0.0.1", "::1"})


def exempt_sources(limits: Limits) -> frozenset[str]:
    return LOOPBACK if limits.exempt_loopback else frozenset()


def binding_caps(limits: Limits) -> BindingCaps:
    return BindingCaps(limits.max_bindings, limits.max_bindings_per_source,
                       limits.max_contacts_per_extension, limits.max_known,
                       exempt_sources(limits), limits.retry_after)


def sip_limiter(limits: Limits) -> SourceLimiter:
    return SourceLimiter(limits.sip_rate, limits.sip_burst, limits.sources_tracked,
                         exempt_sources(limits))
