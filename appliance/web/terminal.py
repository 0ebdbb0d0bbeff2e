"""`meshsip status` in a terminal: the status page's content as text.

The same `/api/status` document as the page: the box and its trust mode, problems first,
then the ring (boxes in ring order, a cross on the ones that do not answer), the phones of
the whole overlay with their names, the calls, and this box's registrations.
"""

from __future__ import annotations

from typing import Any

from .problems import duration, plural

GREEN, RED, BOLD, RESET = "\033[32m", "\033[31m", "\033[1m", "\033[0m"


def render_terminal(doc: dict[str, Any], color: bool = False) -> str:
    def paint(code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    box, node = doc["box"], doc["node"]
    lines = [
        paint(BOLD, f"meshsip box {box['name']}") + f"  {box['address']}  overlay "
        f"{box['overlay']}, {box['mode']} mode, phones {box['policy']}, version "
        f"{box['version']}, up {duration(box['uptime_seconds'])}",
        f"SIP port {node['sip_port']} on {node['bind']}, TLS for phones "
        + (f"on port {node['tls_port']}" if node.get("tls_port") else "off")
        + ", status page " + (f"on port {box['web_port']}" if box["web_port"] else "off")
        + f", data in {node['data_dir']}",
        *_trust(doc.get("overlay")),
        "",
    ]
    problems = doc["problems"]
    lines.append(f"problems: {len(problems)}" if problems else paint(GREEN, "problems: none"))
    for p in problems:
        lines += [paint(RED, f"  ! {p['text']}"), f"    -> {p['action']}"]
    boxes = doc["boxes"]
    answering = sum(b["answering"] for b in boxes)
    lines += ["", f"ring: {len(boxes)} boxes, {answering} answering"]
    lines.append("  " + " -> ".join(
        (b["name"] or b["node_id"][:8]) + ("*" if b["this"] else "")
        + ("" if b["answering"] else paint(RED, " (x)")) for b in boxes)
        + (" -> (back to the first)" if len(boxes) > 1 else ""))
    for b in boxes:
        mark = paint(GREEN, "ok") if b["answering"] else paint(RED, "x ")
        up = duration(b["uptime_seconds"]) if b["uptime_seconds"] is not None else "?"
        state = (f"{plural(b['phones'], 'phone')}, {plural(b['calls'], 'call')}, up {up}"
                 if b["answering"]
                 else f"not answering for {duration(b['silent_seconds'] or 0)}")
        this = "  (this box)" if b["this"] else ""
        lines.append(f"  {mark} {b['name'] or '?':<16} {b['address']:<16} {state}{this}")
    directory = doc["directory"]
    lines += ["", f"phones: {len(directory)}"]
    lines += [f"  {p['extension']:<12} {p['name']:<20} on {p['box'] or p['box_id'][:8]}"
              for p in directory]
    calls = doc["live_calls"]
    lines += ["", f"calls: {len(calls)}"]
    lines += [f"  {c['caller']} -> {c['callee']}  {c['state']} {float(c['seconds'] or 0):.0f}s"
              f"  ({', '.join(c['boxes'])})" for c in calls]
    regs = doc["registrations"]
    lines += ["", f"registrations: {len(regs)}"]
    lines += [f"  {r['extension']:<12} {r['contact']}  (expires in {r['expires_in']}s, "
              f"{r['source']})" for r in regs]
    return "\n".join(lines)


def _trust(overlay: dict[str, Any] | None) -> list[str]:
    """The box's trust mode in plain words (issue 9), its CRL in CA mode, the refusals."""
    if not overlay or "trust" not in overlay:
        return []
    line = f"trust: {overlay['trust']}"
    if overlay.get("mode") == "ca":
        crl = overlay.get("crl_number")
        line += f"; CRL number {crl}" if crl else "; no CRL received"
    refused = {r: n for r, n in (overlay.get("refusals") or {}).items() if n}
    if refused:
        line += "; refused: " + ", ".join(f"{r} {n}" for r, n in sorted(refused.items()))
    return [line]
