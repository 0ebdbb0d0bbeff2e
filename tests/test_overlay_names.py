"""One rule for an overlay name (overlay/names.py): the config, the command line, the wire
codec and discovery all take exactly the names it takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from overlay.chord import messages as m
from overlay.chord.wire import WireCodec
from overlay.discovery import Discovery
from overlay.identity import NodeIdentity
from overlay.names import check_overlay_name

GOOD = ["meshsip", "a", "A.b-c_9", "9", "x" * 64, "relief-2024.north_camp"]
BAD = [
    "", " ", "a b", "a;b", "a=b", 'a"b', "a,b", "a<b", "a/b", "a:b", "a@b", "a%41", "a\nb",
    "café", "名前", "x" * 65, "-a", ".a", "_a", "a+b", "a~b",
]
A_ID, B_ID = NodeIdentity.generate(), NodeIdentity.generate()
A = m.NodeRef(A_ID.node_id, "10.0.0.1", 5060)
B = m.NodeRef(B_ID.node_id, "10.0.0.2", 5070)


@pytest.mark.parametrize("name", GOOD)
def test_a_valid_name_is_taken_everywhere_and_travels_on_the_wire(name: str) -> None:
    assert check_overlay_name(name) == name
    assert load_config(None, {"overlay": name}).overlay == name
    ca, cb = WireCodec(A_ID, name), WireCodec(B_ID, name)
    got = cb.decode(ca.encode(m.Ping(src=A, txn=7, overlay=name), B, 1e9), 1e9)
    assert isinstance(got, m.Ping) and got.overlay == name and got.txn == 7
    d = Discovery(f"{A_ID.node_id:032x}", 5060, lambda p: None, overlay=name, enabled=False)
    assert d._make_info(["10.99.0.1"]).properties[b"overlay"] == name.encode()


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_everywhere_with_the_rule(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ASCII letters, digits"):
        check_overlay_name(name)
    path = tmp_path / "m.toml"
    path.write_text(f"[overlay]\nname = {_toml_string(name)}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "overlay.name" in str(err.value)
    with pytest.raises(ConfigError, match="ASCII letters, digits"):
        load_config(None, {"overlay": name})
    with pytest.raises(ValueError):
        WireCodec(A_ID, name)
    with pytest.raises(ValueError):
        Discovery(f"{A_ID.node_id:032x}", 5060, lambda p: None, overlay=name, enabled=False)


def _toml_string(s: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                         for c in s) + '"'
