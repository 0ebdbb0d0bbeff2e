"""The transaction-stateful proxy and the node's request dispatch (RFC 3261 section 16), sans-IO.

It consumes transaction-layer events and answers through the transaction layer; the asyncio
node only moves bytes and time. Initial requests are routed by extension to the registered
contacts (forking to all of them in parallel), or to the boxes the mesh names; requests
with a Route to us or a To tag follow their route (Record-Route keeps in-dialog requests on
this node). A Route or Request-URI that names this box (any of its addresses or names, see
addresses.py) is the box itself (RFC 3261 16.4). A request that names hosts by name waits
for them to resolve (without blocking) before it is routed.

The parts, one concern each:
    dispatch.py   `Proxy`, the front: events in, to the part that owns them
    intake.py     request validation and route preprocessing (16.3, 16.4), target choice
    context.py    the response context: branches, best response (16.7), CANCEL, Timer C
    closed.py     a 2xx on a branch the box answered itself: ACK and BYE
    boxes.py      routing to other boxes: the mesh lookup, Meshsip-Hop, silent boxes
    stateless.py  stateless forwarding: ACK, stray responses, responses not ours
    calls.py      call bookkeeping for the status
    hops.py       this box's Via and Record-Route, its own addresses, next hops
"""

from overlay.sip.routing import new_tag

from .calls import Call
from .dispatch import Proxy
from .intake import ALLOW

__all__ = ["Proxy", "Call", "ALLOW", "new_tag"]
