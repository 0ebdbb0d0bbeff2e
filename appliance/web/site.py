"""The box's web site: the route table, the status documents, the page and the metrics.

    site = Website(node)              # reads the node; serves nothing yet
    await site.start(host, port)      # port None: 80, or 8080 without the right to bind 80
    site.routes.add("/prov/x", fn)    # one line per page (fn(Request) -> Response)

`document()` is the `/api/status` document; the page, `/metrics` and `meshsip status`
(through the control socket) all come from it, so they always agree.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from .document import ThisBox, local_summary, overview
from .http import HttpServer, Request, Response, Routes
from .metrics import CONTENT_TYPE, NodeMetrics
from .page import render_page
from .survey import Member, Phone, Survey

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("meshsip.web")
DEFAULT_PORT = 80
UNPRIVILEGED_PORT = 8080
JSON = "application/json"
NOTE_SECONDS = 2.0  # how often the ring's members are noted (no network traffic)


class WebError(Exception):
    """The web server cannot start as configured (said plainly, for the operator)."""


class Website:
    def __init__(self, node: Node, metrics: NodeMetrics) -> None:
        self.node = node
        self.metrics = metrics
        self.routes = Routes()
        self.server = HttpServer(self.routes, node.config.web_operator_password)
        # other boxes serve on our port (80 by default, when ours is off too)
        self.survey = Survey(self._members, lambda: self.server.port or DEFAULT_PORT)
        self._noting: asyncio.Task[None] | None = None
        self.routes.add("/", self._page)
        self.routes.add("/api/status", self._status)
        self.routes.add("/api/local", self._local)
        self.routes.add("/metrics", self._metrics)

    async def start(self, host: str, port: int | None) -> None:
        try:
            await self._bind(host, DEFAULT_PORT if port is None else port)
        except PermissionError:
            if port is not None:
                raise WebError(f"web port {port} needs root or CAP_NET_BIND_SERVICE: run as "
                               "root, choose a port above 1023 ([web] port, --web-port), or "
                               "--web-port 0 for no status page") from None
            log.warning("web port %d needs root or CAP_NET_BIND_SERVICE: status page on "
                        "port %d instead ([web] port or --web-port to choose)",
                        DEFAULT_PORT, UNPRIVILEGED_PORT)
            await self._bind(host, UNPRIVILEGED_PORT)
        self._noting = asyncio.get_running_loop().create_task(self._note_members())
        log.info("status page on http://%s:%d/ (also /api/status, /metrics)",
                 host if host not in ("0.0.0.0", "::", "") else "<this box>", self.server.port)

    async def _bind(self, host: str, port: int) -> None:
        try:
            await self.server.start(host, port)
        except OSError as exc:
            if exc.errno == errno.EACCES:
                raise PermissionError from exc
            hint = " (another web server?)" if exc.errno == errno.EADDRINUSE else ""
            raise WebError(f"cannot serve the status page on port {port}: {exc.strerror}"
                           f"{hint}; set [web] port or --web-port (0: no status page)") from None

    async def _note_members(self) -> None:
        while True:
            try:
                new = self.survey.note_members()
                if new:  # one request to each new box (a cold start of n boxes: n - 1 each)
                    await self.survey.ask(new)
            except Exception:  # a slip here must not end the noting for good
                log.exception("noting the ring's boxes failed")
            await asyncio.sleep(NOTE_SECONDS)

    async def close(self) -> None:
        if self._noting is not None:
            self._noting.cancel()
        await self.server.close()

    # -- the documents ----------------------------------------------------------------------
    def _members(self) -> list[Member]:
        mesh = self.node.mesh
        if mesh is None:
            return []
        ring = mesh.service.node
        neighbours = {ref.id: ref for ref in
                      [*ring.successors, *filter(None, [ring.predecessor])]}
        return [(f"{ref.id:032x}", ref.host, ref.id in neighbours)
                for ref in [*neighbours.values(),
                            *(r for r in ring.known_nodes() if r.id not in neighbours)]]

    def this_box(self) -> ThisBox:
        node, mesh = self.node, self.node.mesh
        now = asyncio.get_running_loop().time()
        ring = mesh.service.node if mesh is not None else None
        return ThisBox(
            name=node.config.box_name, node_id=node.identity.node_id_hex,
            address=mesh.service.ref.host if mesh is not None else node.config.bind,
            overlay=node.config.overlay, mode=node.identity.mode, policy=node.config.policy,
            uptime_seconds=node.uptime_seconds(), web_port=self.server.port,
            phones=self._phones(now),
            calls=node.proxy.status(now),
            ring_members=len(ring.known_nodes()) if ring is not None else 0,
            joining=bool(ring is not None and ring.joining),
        )

    def _phones(self, now: float) -> list[Phone]:
        """This box's registered phones, each named by the first binding with a name."""
        location = self.node.location
        return [Phone(ext, next((b.name for b in live if b.name), ""))
                for ext in sorted(location.bindings) if (live := location.lookup(ext, now))]

    async def document(self) -> dict[str, Any]:
        """`/api/status`: the node's status and the overlay as this box sees it."""
        others = await self.survey.refresh()
        doc = self.node.status() | overview(self.this_box(), others, time.monotonic())
        return doc | {"enrolment": self.node.onboard.panel()}  # appliance/onboard

    # -- routes ----------------------------------------------------------------------------
    async def _page(self, request: Request) -> Response:
        html = render_page(await self.document())
        return Response(200, html.encode(), "text/html; charset=utf-8")

    async def _status(self, request: Request) -> Response:
        return Response(200, json.dumps(await self.document()).encode(), JSON)

    def _local(self, request: Request) -> Response:
        return Response(200, json.dumps(local_summary(self.this_box())).encode(), JSON)

    async def _metrics(self, request: Request) -> Response:
        doc = await self.document()
        return Response(200, self.metrics.render(doc, dict(self.server.counters)), CONTENT_TYPE)
