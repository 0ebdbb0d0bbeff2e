"""The status page's "Add a phone" part: the Linphone QR code of the latest one-time link
an operator made (`meshsip enroll --linphone`, until a phone uses it), the enrolment
window and the typed fallback."""

from __future__ import annotations

from html import escape

import segno


def render_panel(shown: tuple[str, str] | None, status: dict[str, object], box: str) -> str:
    left = int(status["open_seconds_left"])  # type: ignore[call-overload]
    window = (f"Enrolment is open for {left // 60} min: desk phones plugged into this box's "
              "network configure themselves (plug-and-play, or DHCP option 66 "
              f"<code>http://{escape(box)}/prov/</code>)." if left > 0 else
              "Enrolment is closed: <code>meshsip enroll --open 10m</code> on this box "
              "opens it for desk phones.")
    typed = (f"Or by hand: SIP server <b>{escape(box)}</b>, any extension as user name "
             "(open mode) or one from the users file.")
    if shown is None:
        qr = ("<p>For Linphone: <code>meshsip enroll --linphone</code> on this box shows a "
              "one-time link and its QR code here.</p>")
    else:
        url, extension = shown
        qr = (f"<p>Linphone, extension <b>{escape(extension)}</b>: scan this code "
              "(Assistant &gt; Fetch remote configuration); it works once.</p>"
              f"{segno.make(url, error='m').svg_inline(scale=4)}"
              f"<p><code>{escape(url)}</code></p>")
    return f"<p>{window}</p>{qr}<p>{typed}</p>"
