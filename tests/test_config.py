"""Config loading: defaults, overrides, and plain-spoken errors."""

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config


def test_defaults_need_no_file() -> None:
    config = load_config(None)
    assert (config.bind, config.sip_port, config.policy) == ("0.0.0.0", 5060, "open")


def test_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[sip]\nport = 5070\nt1_ms = 100\n[registrar]\npolicy = "digest"\n'
                    'users_file = "users.toml"\n')
    config = load_config(path, {"sip_port": 5080, "bind": None})
    assert config.sip_port == 5080 and config.t1_ms == 100
    assert config.users_file == tmp_path / "users.toml"


@pytest.mark.parametrize("text, words", [
    ("[sip\n", "not valid TOML"),
    ("[sipp]\nport = 1\n", "unknown section [sipp]"),
    ("[sip]\nprot = 1\n", "unknown key 'prot' in [sip]"),
    ('[sip]\nport = "5060"\n', "sip.port must be a whole number"),
    ("[sip]\nport = 70000\n", "not between 0 and 65535"),
    ('[registrar]\npolicy = "closed"\n', "must be 'open' or 'digest'"),
    ('[registrar]\npolicy = "digest"\n', "needs registrar.users_file"),
    ('[registrar]\ndigest_algorithms = ["SHA-1"]\n', "takes 'MD5' and/or 'SHA-256'"),
])
def test_bad_config_is_explained(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
