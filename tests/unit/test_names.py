"""Every name that reaches a command line is checked first; hostile ones never run."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.engine.errors import ValidationError
from workers.engine.names import (
    SnapName,
    parse_snapname,
    validate_dataset,
    validate_host,
    validate_snapshot,
    validate_tag,
)

HOSTILE = [
    "pool/fs; rm -rf /",
    "pool/$(id)",
    "pool/`id`",
    "pool/fs|cat",
    "pool/fs&",
    "pool/fs\nzfs destroy -r pool",
    "pool/'quoted'",
    'pool/"dq"',
    "pool/fs>out",
    "pool/*",
    "-Rf",
    "--help",
    "pool/fs\\x",
    "pool/fs$HOME",
    "pool/fs\0",
    "pool/../etc",
    "pool//fs",
    "/pool/fs",
    "pool/fs/",
    "9pool/fs",
    "",
    "p" * 256,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_dataset_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_dataset(name)
    assert "dataset name" in str(exc.value)


@pytest.mark.parametrize("name", ["pool", "pool/fs", "tank/a-b_c.d:e/f", "p/with space"])
def test_valid_dataset_names_pass_unchanged(name: str) -> None:
    assert validate_dataset(name) == name


def test_snapshot_given_where_fs_expected_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a snapshot"):
        validate_dataset("pool/fs@zrep_000001")


def test_snapshot_split() -> None:
    assert validate_snapshot("pool/fs@zrep_00000a") == ("pool/fs", "zrep_00000a")
    for bad in ("pool/fs", "pool/fs@", "pool/fs@a@b", "pool/fs@$(id)", "-x@y"):
        with pytest.raises(ValidationError):
            validate_snapshot(bad)


@pytest.mark.parametrize(
    "host", ["-oProxyCommand=sh", "host;id", "user@host", "host:22", "a b", "", "h$(x)", "-"]
)
def test_hostile_host_names_are_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="host name"):
        validate_host(host)


@pytest.mark.parametrize("host", ["hostb", "host-b.example.org", "10.0.0.2", "H1"])
def test_valid_hosts(host: str) -> None:
    assert validate_host(host) == host


def test_tags() -> None:
    assert validate_tag("zrep") == "zrep"
    assert validate_tag("zrep-offsite") == "zrep-offsite"
    for bad in ("Zrep", "a:b", "", "-x", "a b", "x" * 65):
        with pytest.raises(ValidationError):
            validate_tag(bad)


def test_snapname_parse_and_format() -> None:
    assert parse_snapname("zrep_00002a", "zrep") == SnapName(0x2A, "zrep")
    assert parse_snapname("zrep_00002a_unsent", "zrep") == SnapName(0x2A, "zrep", "_unsent")
    assert str(SnapName(0x2A, "zrep")) == "zrep_00002a"
    assert str(SnapName(0x2A, "zrep", "_unsent")) == "zrep_00002a_unsent"
    assert parse_snapname("zrep_2a", "zrep") is None
    assert parse_snapname("other_000001", "zrep") is None
    assert parse_snapname("zrep_00000G", "zrep") is None
    assert SnapName(1, "zrep") < SnapName(1, "zrep", "_unsent") < SnapName(2, "zrep")


@given(st.text(max_size=80))
def test_validation_never_lets_shell_metacharacters_through(text: str) -> None:
    """Property: whatever passes as a dataset name holds no shell metacharacter."""
    try:
        validate_dataset(text)
    except ValidationError:
        return
    assert not set(text) & set(";|&$`'\"\\<>(){}[]*?!~#\n\t\0")
    assert not text.startswith("-")
