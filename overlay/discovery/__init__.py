"""Discovery of the other nodes of an overlay: mDNS / DNS-SD, seed addresses, a peer cache.

    discovery = Discovery(node_id_hex, sip_port, on_peer, overlay="meshsip", data_dir=...)
    watcher = LinkWatcher(discovery.links_changed)      # overlay.links
    await discovery.start(); await watcher.start()
    ...
    await watcher.stop(); await discovery.stop()

See `Discovery` for what a report means (a hint, never a proof of life) and `PeerCache`
for the cache file. `python -m overlay.discovery --help` runs one instance and prints the
peers it finds as JSON lines (for trials and the namespace tests).
"""

from .peers import CACHE_FILE, PROTOCOL_VERSION, PeerCache, PeerInfo, parse_seed
from .service import DEFAULT_OVERLAY, SERVICE_TYPE, Discovery, OnPeer, instance_name

__all__ = [
    "CACHE_FILE",
    "DEFAULT_OVERLAY",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Discovery",
    "OnPeer",
    "PeerCache",
    "PeerInfo",
    "instance_name",
    "parse_seed",
]
