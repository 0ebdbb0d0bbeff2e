"""The status page: one HTML document with its style, its ring picture (inline SVG) and a
few lines of script, no external asset (no Internet in the field).

Rendered on the box from the `/api/status` document, so it is complete with JavaScript
off (it then reloads itself every 30 s through a `<noscript>` refresh); with JavaScript
on, it fetches itself every 5 s and swaps its main part in place. Every value that came
from the network (box names, extensions, phones' names) is escaped.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any

from .problems import duration, plural

RING_SIZE = 400  # SVG view box height; the width adds room for the labels at the sides
MARGIN = 95
RADIUS = 115
LABELS_UP_TO = 12  # beyond this many boxes the picture names them only

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#111}
main{max-width:760px;margin:auto;padding:8px 12px}
h1{font-size:1.3em;margin:.3em 0}h2{font-size:1.1em;margin:1em 0 .3em}
.meta{color:#444;margin:0}.ok{color:#176f2c}.bad{color:#b00020}
ul.problems{padding-left:1.2em}ul.problems li{margin:.3em 0}
ul.problems b{color:#b00020}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:4px 5px;border-bottom:1px solid #ddd;font-size:.9em}
td:nth-child(-n+2){white-space:nowrap}
svg{width:100%;max-width:460px;display:block;margin:auto}
svg text{font-size:12px;fill:#222}svg .n{font-weight:bold;font-size:13px}
.slot{border:1px dashed #999;padding:8px;color:#555}
footer{color:#666;font-size:.85em;text-align:center;padding:8px}
"""

SCRIPT = """
(function(){var live=document.getElementById("live");
live.textContent="Live: updated every 5 s.";
setInterval(function(){fetch(location.pathname,{cache:"no-store"})
.then(function(r){return r.text()}).then(function(t){
var m=new DOMParser().parseFromString(t,"text/html").getElementById("m");
if(m){document.getElementById("m").replaceWith(m);live.textContent="Live: updated every 5 s."}
}).catch(function(){live.textContent="This box does not answer right now."})},5000)})();
"""


def render_page(doc: dict[str, Any]) -> str:
    box = doc["box"]
    return "".join([
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>meshsip {escape(box['name'])}</title>",
        '<noscript><meta http-equiv="refresh" content="30"></noscript>',
        f"<style>{STYLE}</style></head><body><main id=\"m\">",
        _header(box, (doc.get("overlay") or {}).get("trust")),
        _problems(doc["problems"]),
        _boxes(doc["boxes"]),
        _phones(doc["directory"]),
        _calls(doc["live_calls"]),
        _enrolment(doc.get("enrolment")),
        '</main><footer id="live">This page reloads itself every 30 s.</footer>',
        f"<script>{SCRIPT}</script></body></html>",
    ])


def _header(box: dict[str, Any], trust: str | None) -> str:
    # the node's own sentence (appliance/pki.py trust_summary) names the CA
    mode = escape(trust) if trust else (
        "CA (only certified boxes)" if box["mode"] == "ca" else "open (any box may join)")
    return (f"<h1>meshsip box {escape(box['name'])}</h1>"
            f'<p class="meta">{escape(box["address"])} &middot; overlay '
            f"{escape(box['overlay'])} &middot; mode {mode} &middot; phones "
            f"{escape(box['policy'])} &middot; version {escape(box['version'])} &middot; up "
            f"{duration(box['uptime_seconds'])} &middot; shown at "
            f"{time.strftime('%H:%M:%S')} (this box's clock)</p>")


def _problems(problems: list[dict[str, str]]) -> str:
    if not problems:
        return '<h2>Problems</h2><p class="ok" id="problems">Nothing wrong seen.</p>'
    items = "".join(f"<li><b>{escape(p['text'])}</b>: {escape(p['action'])}.</li>"
                    for p in problems)
    return f'<h2>Problems ({len(problems)})</h2><ul class="problems" id="problems">{items}</ul>'


def _state(b: dict[str, Any]) -> str:
    if b["answering"]:
        return '<span class="ok">answering</span>'
    return f'<span class="bad">not answering for {duration(b["silent_seconds"] or 0)}</span>'


def _boxes(boxes: list[dict[str, Any]]) -> str:
    answering = sum(b["answering"] for b in boxes)
    rows = "".join(
        f'<tr data-box="{escape(b["node_id"])}"><td>{escape(b["name"] or "?")}'
        f'{" (here)" if b["this"] else ""}</td><td>{escape(b["address"])}</td>'
        f'<td>{b["phones"] if b["answering"] else "?"}</td>'
        f"<td>{duration(b['uptime_seconds']) if b['uptime_seconds'] is not None else '?'}</td>"
        f"<td>{_state(b)}</td></tr>"
        for b in boxes)
    return (f"<h2>Boxes ({len(boxes)}, {answering} answering)</h2>{ring_svg(boxes)}"
            '<table id="boxes"><tr><th>box</th><th>address</th><th>phones</th><th>up</th>'
            f"<th>state</th></tr>{rows}</table>")


def ring_svg(boxes: list[dict[str, Any]]) -> str:
    """The boxes on a circle (in ring order), this box ringed in blue, a line from it to
    each other box: green when that box answers, red and dashed when it does not."""
    c = RING_SIZE / 2
    n = max(len(boxes), 1)
    spots = [(c + RADIUS * math.sin(2 * math.pi * i / n),
              c - RADIUS * math.cos(2 * math.pi * i / n)) for i in range(len(boxes))]
    me = next((spots[i] for i, b in enumerate(boxes) if b["this"]), (c, c))
    parts = [f'<svg viewBox="{-MARGIN} 0 {RING_SIZE + 2 * MARGIN} {RING_SIZE}" role="img" '
             f'aria-label="the ring of {len(boxes)} boxes">',
             f'<circle cx="{c}" cy="{c}" r="{RADIUS}" fill="none" stroke="#ccc"/>']
    for b, (x, y) in zip(boxes, spots, strict=True):
        if not b["this"]:
            style = 'stroke="#2a8a3e"' if b["answering"] else \
                'stroke="#b00020" stroke-dasharray="5 4"'
            parts.append(f'<line x1="{me[0]:.1f}" y1="{me[1]:.1f}" x2="{x:.1f}" y2="{y:.1f}" '
                         f'{style} stroke-width="1.5"/>')
    for b, (x, y) in zip(boxes, spots, strict=True):
        fill = "#2a8a3e" if b["answering"] else "#b00020"
        ring = ' stroke="#1a56c4" stroke-width="4"' if b["this"] else ""
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="11" fill="{fill}"{ring}/>')
        parts.append(_label(b, x, y, c, detailed=len(boxes) <= LABELS_UP_TO))
    parts.append("</svg>")
    return "".join(parts)


def _label(b: dict[str, Any], x: float, y: float, c: float, detailed: bool) -> str:
    dx, dy = x - c, y - c
    length = math.hypot(dx, dy) or 1.0
    lx, ly = x + 20 * dx / length, y + 20 * dy / length
    anchor = "middle" if abs(dx) < 20 else ("start" if dx > 0 else "end")
    lines = [f'<tspan class="n">{escape(b["name"] or b["node_id"][:8])}</tspan>']
    if detailed:
        up = duration(b["uptime_seconds"]) if b["uptime_seconds"] is not None else "?"
        state = (f"{plural(b['phones'], 'phone')}, up {up}" if b["answering"]
                 else f"silent {duration(b['silent_seconds'] or 0)}")
        lines += [escape(b["address"]), state]
    # the block of lines sits above a box at the top, below one at the bottom, centred
    # beside one at the side
    ly += 4 - 12 * (len(lines) - 1) * (1 - dy / length) / 2
    spans = "".join(f'<tspan x="{lx:.1f}" dy="{0 if i == 0 else 12}">{t}</tspan>'
                    for i, t in enumerate(lines))
    return f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}">{spans}</text>'


def _phones(directory: list[dict[str, str]]) -> str:
    rows = "".join(f'<tr data-phone="{escape(p["extension"])}"><td>{escape(p["extension"])}'
                   f'</td><td>{escape(p["name"])}</td>'
                   f'<td>{escape(p["box"] or p["box_id"][:8])}</td></tr>'
                   for p in directory)
    if not rows:
        return "<h2>Phones (0)</h2><p>No phone is registered on any answering box.</p>"
    return (f"<h2>Phones ({len(directory)})</h2><table id=\"phones\"><tr><th>extension</th>"
            f"<th>name</th><th>box</th></tr>{rows}</table>")


def _calls(calls: list[dict[str, Any]]) -> str:
    if not calls:
        return "<h2>Calls (0)</h2><p>No call right now.</p>"
    rows = "".join(f"<tr><td>{escape(str(c['caller']))} &rarr; {escape(str(c['callee']))}</td>"
                   f"<td>{escape(str(c['state']))}</td>"
                   f"<td>{duration(float(c['seconds'] or 0))}</td>"
                   f"<td>{escape(', '.join(c['boxes']))}</td></tr>" for c in calls)
    return (f"<h2>Calls ({len(calls)})</h2><table id=\"calls\"><tr><th>call</th><th>state</th>"
            f"<th>for</th><th>boxes</th></tr>{rows}</table>")


def _enrolment(enrolment: Any) -> str:
    # "Phones onboard themselves" fills this place with the Linphone QR code.
    if not enrolment:
        return ('<h2>Add a phone</h2><p class="slot" id="enrolment">Point the phone at this '
                "box's address as its SIP server, with any extension as user name.</p>")
    return f'<h2>Add a phone</h2><div id="enrolment">{enrolment}</div>'
