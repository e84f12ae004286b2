"""zrep's environment variables and zrep's text formats, byte for byte."""

from __future__ import annotations

import time

import pytest

from workers.engine.config import EngineConfig
from workers.engine.errors import ConfigError, ValidationError
from workers.engine.formats import list_verbose_text, status_line
from workers.engine.results import StatusRow


def test_defaults_match_zrep() -> None:
    c = EngineConfig.from_env({})
    assert (c.tag, c.save_count, c.inc_flag, c.rename_unsent) == ("zrep", 5, "-I", True)
    assert c.resume  # zrepq's default, unlike zrep's (docs/configuration.md)
    assert c.dateformat == "%Y/%m/%d-%H:%M:%S"
    assert c.prop("src-fs") == "zrep:src-fs"


def test_zrep_environment_names_are_honoured() -> None:
    c = EngineConfig.from_env(
        {
            "ZREPTAG": "offsite",
            "ZREP_SAVE_COUNT": "9",
            "ZREP_R": "-R",
            "ZREP_SEND_FLAGS": "-c --raw",
            "ZREP_RESUME": "1",
            "ZREP_OUTFILTER": "zstd -c",
            "ZREP_INFILTER": "zstd -dc",
            "ZREP_SKIP_EXPIRE": "yes",
            "ZREP_RENAME_UNSENT": "no",
            "ZREP_CREATE_FLAGS": "-o compression=lz4",
            "ZREP_SRC_HOST": "hosta",
            "ZREP_INIT_REMOTE_PROPERTIES": "quota=1G atime=off",
            "ZREP_DATEFORMAT": "%s",
        }
    )
    assert c.tag == "offsite" and c.inc_flag == "-i"  # non-default tag sends with -i
    assert c.save_count == 9 and c.recursive and c.resume and c.skip_expire
    assert c.send_flags == ("-c", "--raw")
    assert (c.outfilter, c.infilter) == ("zstd -c", "zstd -dc")
    assert not c.rename_unsent
    assert c.create_flags == ("-o", "compression=lz4")
    assert c.init_remote_properties == (("quota", "1G"), ("atime", "off"))
    assert c.src_host == "hosta" and c.dateformat == "%s"
    assert c.hold_tag == "zrepq:offsite:lastsent"


@pytest.mark.parametrize(
    "value, on",
    [
        (None, True),  # unset: zrepq resumes by default
        ("", True),  # empty counts as unset
        ("1", True),  # zrep: any value means on
        ("yes", True),
        ("0", False),  # the explicit off switch
        ("no", False),
        ("off", False),
        ("false", False),
        ("NO", False),
    ],
)
def test_zrep_resume_is_on_unless_switched_off(value: str | None, on: bool) -> None:
    env = {} if value is None else {"ZREP_RESUME": value}
    assert EngineConfig.from_env(env).resume is on


@pytest.mark.parametrize(
    "env, key",
    [
        ({"ZREP_SAVE_COUNT": "many"}, "ZREP_SAVE_COUNT"),
        ({"ZREP_SAVE_COUNT": "0"}, "ZREP_SAVE_COUNT"),
        ({"ZREP_R": "-r"}, "ZREP_R"),
        ({"ZREP_INC_FLAG": "-X"}, "ZREP_INC_FLAG"),
        ({"ZREP_SEND_FLAGS": "-c; rm -rf /"}, "ZREP_SEND_FLAGS"),
        ({"ZREP_INIT_REMOTE_PROPERTIES": "nonsense"}, "ZREP_INIT_REMOTE_PROPERTIES"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        EngineConfig.from_env(env)


def test_bad_tag_is_refused() -> None:
    with pytest.raises(ValidationError, match="tag"):
        EngineConfig.from_env({"ZREPTAG": "bad tag"})


def test_with_tag_switches_inc_flag() -> None:
    c = EngineConfig.from_env({})
    assert c.with_tag("other").inc_flag == "-i"
    assert c.with_tag("other").hold_tag == "zrepq:other:lastsent"


def _row(last: str | None, t: int | None) -> StatusRow:
    return StatusRow("poola/prod", "poola/prod", "hosta", "poolb/prod", "hostb", True, last, t, 5)


def test_status_line_formats_are_zreps() -> None:
    t = int(time.mktime((2026, 11, 23, 19, 5, 20, 0, 0, -1)))
    row = _row("poola/prod@zrep_000002", t)
    assert status_line(row) == "poola/prod" + " " * 42 + " last: 2026/11/23-19:05:20"
    assert status_line(row, verbose=True) == (
        "poola/prod               ->hostb:poolb/prod                    2026/11/23-19:05"
    )
    never = _row(None, None)
    assert status_line(never) == f"{'poola/prod':<52} last: [NEVER]"
    assert status_line(never, verbose=True).endswith(" ")  # zrep prints an empty -v date
    assert status_line(row, dateformat="%s") == f"{'poola/prod':<52} last: {t}"


def test_list_verbose_text() -> None:
    text = list_verbose_text(
        [
            {
                "dataset": "poola/prod",
                "properties": [["zrep:dest-fs", "poolb/prod"], ["zrep:master", "yes"]],
                "last_sent": "poola/prod@zrep_000002",
            }
        ],
        blank_between=False,
    )
    assert text == (
        "poola/prod:\nzrep:dest-fs\tpoolb/prod\nzrep:master\tyes\n"
        "last snapshot synced: poola/prod@zrep_000002\n"
    )
