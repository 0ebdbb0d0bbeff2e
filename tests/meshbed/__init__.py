"""Multi-host test bed: hosts in network namespaces on one bridged segment, with faults
(cuts, partitions, loss, delay, jitter, lost carrier), and phones and nodes inside them.

See meshbed.bed for the API; test_meshbed.py for it in use; `make mesh-demo` to try it.
"""

from .bed import (
    BedError,
    MeshBed,
    cleanup_stale,
    netns_available,
    nft_available,
    stop_process,
)
from .faults import Faults, Pair, hub_links, render_nft
from .probe import Rtt, UdpEcho, ping, udp_probe

__all__ = [
    "BedError", "Faults", "MeshBed", "Pair", "Rtt", "UdpEcho", "cleanup_stale", "hub_links",
    "netns_available", "nft_available", "ping", "render_nft", "stop_process", "udp_probe",
]
