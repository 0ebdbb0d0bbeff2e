import pytest

from appliance.users import UsersFileError, load_users


def write(tmp_path, text: str | bytes):
    path = tmp_path / "users.toml"
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def error(path) -> str:
    with pytest.raises(UsersFileError) as info:
        load_users(path)
    message = str(info.value)
    assert str(path) in message  # every error names the file
    return message


def test_loads_users(tmp_path):
    path = write(
        tmp_path,
        '# comment\n[users]\n"1001" = "secret"\n1002 = "p\\"w"\n"alice.b+c_d-e" = "x"\n'
        "[other]\nignored = 1\n",
    )
    assert load_users(path) == {"1001": "secret", "1002": 'p"w', "alice.b+c_d-e": "x"}
    assert load_users(str(path)) == load_users(path)


def test_empty_users_table_is_fine(tmp_path):
    assert load_users(write(tmp_path, "[users]\n")) == {}


def test_missing_file(tmp_path):
    assert "not found" in error(tmp_path / "nope.toml")


def test_directory_instead_of_file(tmp_path):
    assert "cannot read" in error(tmp_path)


def test_bad_toml_names_the_line(tmp_path):
    message = error(write(tmp_path, '[users]\n"1001" = "ok"\n"1002" = secret\n'))
    assert "invalid TOML" in message
    assert "line 3" in message


def test_not_utf8(tmp_path):
    assert "UTF-8" in error(write(tmp_path, b'[users]\n"1001" = "\xff"\n'))


def test_missing_users_table(tmp_path):
    assert "missing [users] table" in error(write(tmp_path, '[user]\n"1001" = "x"\n'))


def test_users_not_a_table(tmp_path):
    assert "must be a table" in error(write(tmp_path, 'users = "1001"\n'))


@pytest.mark.parametrize(
    ("value", "kind"),
    [("1234", "an integer"), ("true", "a boolean"), ('["a"]', "an array"), ("1.5", "float")],
)
def test_non_string_password(tmp_path, value, kind):
    message = error(write(tmp_path, f'[users]\n"1001" = {value}\n'))
    assert "'1001'" in message
    assert f"must be a string, not {kind}" in message


def test_subtable_password(tmp_path):
    message = error(write(tmp_path, '[users.1001]\npassword = "x"\n'))
    assert "must be a string, not a table" in message


@pytest.mark.parametrize("extension", ["", "10 01", "ext@host", "caf\u00e9", "a:b", "1001\n"])
def test_bad_extension(tmp_path, extension):
    key = extension.replace("\n", "\\n")
    message = error(write(tmp_path, f'[users]\n"{key}" = "x"\n'))
    assert repr(extension) in message
    assert "letters, digits and . _ + -" in message


def test_empty_password(tmp_path):
    assert "'1001' is empty" in error(write(tmp_path, '[users]\n"1001" = ""\n'))
