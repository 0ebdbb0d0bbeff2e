"""DATA_DIR/revoked.crl: the revocation list a box reads at start and when it changes,
and where it keeps a newer one that came through the overlay (so a restart keeps it).

The operator copies the file `meshsip ca revoke` wrote into any one box's data directory
(Ansible, a USB stick, scp); the box adopts it within `POLL_SECONDS` and the overlay
carries it to the others (overlay/chord/wire/revocations.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from overlay.identity import IdentityError
from overlay.revocation import CRL_FILE, Crl, Revocations

log = logging.getLogger("meshsip.revocation")
POLL_SECONDS = 2.0


class CrlFile:
    def __init__(self, data_dir: Path, revocations: Revocations) -> None:
        self.path = data_dir / CRL_FILE
        self.revocations = revocations
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) read last

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def poll(self) -> None:
        """Read the file if it appeared or changed since last read."""
        ca = self.revocations.ca
        signature = self._signature()
        if ca is None or signature is None or signature == self._seen:
            return
        self._seen = signature
        try:
            crl = Crl.verified(self.path.read_bytes(), ca)
        except IdentityError as exc:
            self.revocations.counters[exc.reason] += 1
            log.error("revocation list %s refused: %s", self.path, exc)
            return
        except OSError as exc:
            log.error("cannot read revocation list %s: %s", self.path, exc.strerror)
            return
        if not self.revocations.adopt(crl):
            log.info("revocation list %s: number %d, not newer than the %d held",
                     self.path, crl.number, self.revocations.number)

    def save(self, crl: Crl) -> None:
        """Keep a CRL adopted from the overlay (atomically; a newer file is left alone)."""
        try:
            on_disk = Crl.verified(self.path.read_bytes(), self.revocations.ca).number \
                if self.revocations.ca is not None and self.path.exists() else 0
        except (IdentityError, OSError):
            on_disk = 0
        if on_disk >= crl.number:
            return
        tmp = self.path.with_name(f".{CRL_FILE}.tmp")
        try:
            tmp.write_bytes(crl.der)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot save the revocation list to %s: %s", self.path, exc.strerror)
            return
        self._seen = self._signature()

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.poll()
