"""A laptop on the link that is not a box of ours: it speaks the real overlay wire format
with its own key and tries to take an extension (tests/test_ownership_bed.py runs it in a
namespace of the bed).

    python tests/forge_records.py MY_ADDRESS BOX_ADDRESS BOX_NODE_ID_HEX EXTENSION

Sends the box four signed Stores, then one of them again byte for byte, and prints what
came back as JSON (one entry per Store, in order):
- "claim": a record for EXTENSION signed by this laptop (a phone it does not hold);
- "wrong_key": a record naming the box as owner, signed with this laptop's key;
- "wrong_contact": a record of this laptop's whose contact is another box;
- "free": a record of this laptop's for a free extension (accepted);
- "replay": the "free" Store's bytes again (the box's codec refuses it: no answer).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import replace

from overlay.chord.messages import NodeRef, Record, Store, Stored
from overlay.chord.records import resource_key, sign_record
from overlay.chord.wire import WireCodec
from overlay.identity import NodeIdentity

PORT = 5060


def main(me_host: str, box_host: str, box_id_hex: str, extension: str) -> None:
    identity = NodeIdentity.generate()
    codec = WireCodec(identity, "meshsip")
    me = NodeRef(identity.node_id, me_host, PORT)
    box = NodeRef(int(box_id_hex, 16), box_host, PORT)
    signer = identity.record_signer
    contact = f"sip:{me_host}:{PORT}"

    def record(aor: str, seq: int, contact: str = contact) -> Record:
        rec = Record(resource_key(aor), aor, me.id, contact, seq, 300, claim=seq)
        return sign_record(rec, me.id, signer)

    stores = {
        "claim": record(extension, 1),
        "wrong_key": replace(record(extension, 2), owner=box.id),
        "wrong_contact": record(f"{extension}9", 3, contact=f"sip:{box_host}:{PORT}"),
        "free": record(f"{extension}8", 4),
    }
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((me_host, PORT))
    sock.settimeout(3.0)
    answers: dict[str, object] = {}
    sent = b""
    for txn, (name, rec) in enumerate(stores.items(), 1):
        sent = codec.encode(Store(src=me, txn=txn, overlay="meshsip", records=(rec,)), box,
                            time.time())
        answers[name] = exchange(sock, codec, me, sent, box)
    answers["replay"] = exchange(sock, codec, me, sent, box)
    print(json.dumps(answers))


def exchange(sock: socket.socket, codec: WireCodec, me: NodeRef, data: bytes,
             box: NodeRef) -> object:
    """Send, and the Stored that answers (None: no answer within 3 s)."""
    sock.sendto(data, (box.host, box.port))
    try:
        while True:
            reply, source = sock.recvfrom(65536)
            got = codec.receive(reply, time.time(), me, source=source)
            if isinstance(got.message, Stored):
                m = got.message
                return {"accepted": m.accepted, "rejected": m.rejected, "in_use": m.in_use}
    except TimeoutError:
        return None


if __name__ == "__main__":
    main(*sys.argv[1:5])
