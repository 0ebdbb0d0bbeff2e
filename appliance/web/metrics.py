"""Prometheus metrics (`/metrics`), written by prometheus_client.

Most figures already live in the node's counters and in the `/api/status` document, so
they are read at scrape time by one collector (nothing is counted twice, the hot paths are
not touched); only the lookup latency is observed as it happens, into a histogram. The
process collector adds `process_resident_memory_bytes` (RSS) and CPU time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from overlay.chord.wire.values import REASONS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOOKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lookup_seconds = Histogram(
            "meshsip_lookup_seconds", "Time to find the box that serves an extension",
            ["result"], buckets=LOOKUP_BUCKETS, registry=self.registry)
        self._collector = _DocumentCollector()
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)

    def lookup_done(self, seconds: float, found: bool) -> None:
        self.lookup_seconds.labels("found" if found else "not_found").observe(seconds)

    def render(self, doc: dict[str, Any], web_counters: dict[str, int]) -> bytes:
        """The exposition text for one `/api/status` document."""
        self._collector.doc, self._collector.web = doc, web_counters
        return generate_latest(self.registry)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


class _DocumentCollector(Collector):
    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.web: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        doc = self.doc
        if doc is None:
            return
        box, counters = doc["box"], doc["counters"]
        overlay = doc.get("overlay") or {}
        info = GaugeMetricFamily("meshsip_info", "This box", labels=["name", "version", "mode",
                                                                     "overlay"])
        info.add_metric([box["name"], box["version"], box["mode"], box["overlay"]], 1)
        yield info
        yield _gauge("meshsip_uptime_seconds", "Seconds since the node started",
                     box["uptime_seconds"])
        boxes = GaugeMetricFamily("meshsip_boxes", "Boxes of the overlay seen from this one "
                                  "(this one included)", labels=["state"])
        answering = sum(b["answering"] for b in doc["boxes"])
        boxes.add_metric(["answering"], answering)
        boxes.add_metric(["not_answering"], len(doc["boxes"]) - answering)
        yield boxes
        yield _gauge("meshsip_ring_size_estimate", "Ring size estimated by the Chord node",
                     overlay.get("estimated_size", 1))
        yield _gauge("meshsip_bindings", "Phone registrations (bindings) on this box",
                     len(doc["registrations"]))
        yield _gauge("meshsip_phones_overlay", "Phones registered on every answering box",
                     len(doc["directory"]))
        yield _gauge("meshsip_active_calls", "Calls through this box now", len(doc["calls"]))
        yield _gauge("meshsip_problems", "Problem lines on the status page",
                     len(doc["problems"]))
        yield CounterMetricFamily("meshsip_register_requests", "REGISTER requests handled",
                                  value=counters.get("registrations", 0))
        yield CounterMetricFamily("meshsip_calls", "Calls set up through this box",
                                  value=counters.get("calls", 0))
        yield from self._messages(counters, overlay.get("counters", {}))

    def _messages(self, sip: dict[str, int], ovl: dict[str, int]) -> Iterator[Metric]:
        messages = CounterMetricFamily("meshsip_messages", "Messages on the SIP port (phones "
                                       "and boxes) and of the overlay", labels=["kind",
                                                                                "direction"])
        messages.add_metric(["sip", "in"], sip.get("received", 0))
        messages.add_metric(["sip", "out"], sip.get("sent", 0))
        messages.add_metric(["overlay", "in"], ovl.get("received", 0))
        messages.add_metric(["overlay", "out"], ovl.get("sent", 0))
        yield messages
        refusals = CounterMetricFamily("meshsip_refusals", "Messages and requests refused",
                                       labels=["source", "reason"])
        for reason in REASONS:
            refusals.add_metric(["overlay", reason], ovl.get(reason, 0))
        refusals.add_metric(["sip", "unparsable"], sip.get("parse_errors", 0))
        refusals.add_metric(["sip", "dropped"], sip.get("dropped", 0))
        refusals.add_metric(["sip", "connections_rejected"], sip.get("connections_rejected", 0))
        for key, value in sorted(self.web.items()):
            if key.startswith(("refused_", "bad_")):
                refusals.add_metric(["web", key], value)
        yield refusals
        http = CounterMetricFamily("meshsip_http_requests", "Web requests answered",
                                   labels=["status"])
        for key, value in sorted(self.web.items()):
            if key.startswith("status_"):
                http.add_metric([key.removeprefix("status_")], value)
        yield http
