"""Scenario 9: a property-based corpus of bad input, sent to the real workers by task name.

Hypothesis builds task messages for every task: a well-formed message, then one thing made
wrong in it: a dataset, snapshot, host or tag name carrying shell syntax, path tricks,
control characters, non-ASCII look-alikes or an over-long name; a wrong JSON type; an unknown
field; a message for another host's datasets; a -q below 30 s. The messages go straight onto
na's queue (as another service would send them, bypassing the producer's own checks).

Every message must fail with a `validation` error that says what is wrong, no `zfs` may run
on any host (the stand-in call logs stay empty), and no worker process may die or be
replaced. A second, fast property checks the validators alone on arbitrary text: whatever
they accept holds only characters ZFS allows, so nothing shell-special can reach an argv.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import contract as c
from tasks.errors import TaskFailed
from tests.faults.helpers import figure, producer
from tests.harness.netns import NetBed
from workers.engine.errors import ValidationError
from workers.engine.names import validate_dataset, validate_host, validate_snapshot

# Each fragment makes any name it is put into invalid (a character ZFS forbids, or a broken
# structure), so a message carrying one must be refused before anything runs.
INJECTIONS = [
    "; zfs destroy -r tank",
    "$(reboot)",
    "`id`",
    "| sh",
    "&& halt",
    "&",
    "\n zfs destroy tank",
    "'",
    '"',
    "> /etc/passwd",
    "<x",
    "*",
    "?",
    "\\",
    "!",
    "#bm",
    "%recv",
    "{a,b}",
    "~root",
    "\t",
    "\x00",
    "\x1b[2J",
    "é",
    "\u2215",  # a division slash that looks like '/'
    "\u200b",  # zero-width space
    "/../..",
    "//",
    "/./",
    "@@",
    "$IFS",
    "(",
    ")",
    "[",
    "=",
    "+",
    ",",
]

NAME_FIELDS = {
    c.SYNC: {"fs": "tank/data"},
    c.SYNCONLY: {"fs": "tank/data"},
    c.ROLLBACK: {"snapshot": "tank/data@zrep_000001"},
    c.INIT: {"fs": "tank/data", "dest_host": "nb", "dest_fs": "tank/copy"},
    c.REFRESH: {"fs": "tank/data"},
    c.SNAPONLY: {"fs": "tank/data"},
    c.EXPIRE: {"fs": "tank/data"},
    c.FAILOVER: {"fs": "tank/data", "other_host": "nb"},
    c.TAKEOVER: {"fs": "tank/data", "other_host": "nb"},
    c.CLEAR: {"fs": "tank/data"},
    c.LASTSENT: {"fs": "tank/data"},
    c.UPTODATE: {"fs": "tank/data"},
    c.CHANGECONFIG: {"fs": "tank/data", "other_host": "nb", "other_fs": "tank/copy"},
    c.SENTSYNC: {"snapshot": "tank/data@zrep_000001"},
    c.PAUSE: {"fs": "tank/data"},
    c.RESUME: {"fs": "tank/data"},
    c.STATUS: {"fs": ["tank/data"]},
    c.LIST: {"fs": ["tank/data"]},
    c.SYNC_ALL: {},
}
HOST_LIKE = {"dest_host", "other_host"}
OPTIONAL = {c.EXPIRE: {"fs"}}  # (and other_host): fields where null is a valid value
WRONG_TYPES = [0, 1.5, True, None, [], {}, ["tank/data"], {"fs": "tank/data"}, "tank/data"]


def _insert(base: str, frag: str, at: int) -> str:
    i = at % (len(base) + 1)
    return base[:i] + frag + base[i:]


@st.composite
def bad_message(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    """(task name, kwargs, what was made wrong)."""
    name = draw(st.sampled_from(sorted(NAME_FIELDS)))
    kwargs: dict[str, Any] = {"host": "na", **NAME_FIELDS[name]}
    fields = [k for k in kwargs if k != "host"]
    kinds = ["host", "tag", "unknown-field", "other-host"]
    if fields:
        kinds += ["name", "name", "name", "wrong-type"]
    if name in (c.SYNC, c.SYNC_ALL):
        kinds.append("quiet")
    kind = draw(st.sampled_from(kinds))
    frag = draw(st.sampled_from(INJECTIONS))
    at = draw(st.integers(0, 40))
    if kind == "name":
        field = draw(st.sampled_from(fields))
        value = kwargs[field]
        if field in HOST_LIKE:
            bad = _insert(str(value), frag, at)
        elif isinstance(value, list):
            bad = [*value, _insert("tank/data", frag, at)]
        else:
            bad = draw(
                st.sampled_from(
                    [
                        _insert(str(value), frag, at),
                        "-" + str(value),  # would be read as an option
                        "tank/" + "x" * 260,  # longer than ZFS allows
                        "",
                        "/tank/data",
                        "tank/data/",
                    ]
                )
            )
        kwargs[field] = bad
        return name, kwargs, f"{field}={bad!r}"
    if kind == "wrong-type":
        field = draw(st.sampled_from(fields))
        wrong = [w for w in WRONG_TYPES if not isinstance(w, type(kwargs[field]))]
        if field in OPTIONAL.get(name, ()) or field in HOST_LIKE:
            wrong = [w for w in wrong if w is not None]  # None is a valid "not given" there
        kwargs[field] = draw(st.sampled_from(wrong))
        return name, kwargs, f"{field} type"
    if kind == "host":
        kwargs["host"] = _insert("na", frag, at)
        return name, kwargs, f"host={kwargs['host']!r}"
    if kind == "tag":
        kwargs["tag"] = draw(st.sampled_from([_insert("zrep", frag, at), "ZREP", "", "-t"]))
        return name, kwargs, f"tag={kwargs['tag']!r}"
    if kind == "unknown-field":
        kwargs[draw(st.sampled_from(["__class__", "argv", "cmd", "Fs", "shell"]))] = frag
        return name, kwargs, "unknown field"
    if kind == "other-host":
        kwargs["host"] = "nb"  # a valid message, but for nb's datasets, on na's queue
        return name, kwargs, "another host's message"
    kwargs["quiet_secs"] = draw(st.integers(-5, 29))
    return name, kwargs, "quiet_secs < 30"


def _calls(bed: NetBed) -> dict[str, int]:
    return {n: len(h.zfs.calls()) for n, h in bed.hosts.items()}


def test_bad_messages_are_refused_and_run_nothing(netbed: Callable[..., NetBed]) -> None:
    bed = netbed(2)
    app = producer(bed).app
    workers = {
        n: (h.worker.pid, set(bed.pool_children(n)))
        for n, h in bed.hosts.items()
        if h.worker is not None
    }
    before = _calls(bed)
    seen: list[str] = []

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(bad_message(), min_size=1, max_size=4))
    def check(batch: list[tuple[str, dict[str, Any], str]]) -> None:
        sent = [
            (app.send_task(n, kwargs=kw, queue=c.queue_for("na")), n, kw, what)
            for n, kw, what in batch
        ]
        for r, n, kw, what in sent:
            r.get(timeout=30, propagate=False)
            where = f"{n} {what}: {kw!r}"
            assert r.state == "FAILURE", where
            assert isinstance(r.result, TaskFailed), f"{where}: {r.result!r}"
            rec = r.result.record
            assert rec["kind"] == "validation", f"{where}: {rec}"
            assert rec["message"] and len(rec["message"]) < 2000, where
            seen.append(n)

    check()
    assert _calls(bed) == before  # no zfs ran, on any host
    for n, (pid, pool) in workers.items():
        host = bed.hosts[n]
        assert host.worker is not None and host.worker.proc.poll() is None, n
        assert host.worker.pid == pid and set(bed.pool_children(n)) == pool, n
    figure("bad input: messages refused / tasks covered", (len(seen), len(set(seen))))


# ---- the validators alone, on arbitrary text ----------------------------------------------

_ZFS_NAME = re.compile(r"[A-Za-z0-9_.:\- /@]+")


@settings(max_examples=3000, deadline=None, database=None)
@given(st.one_of(st.text(max_size=80), st.text(alphabet="tank/@-_. :;$`|&'\"\\x0a", max_size=40)))
def test_validators_accept_only_zfs_characters(text: str) -> None:
    for validate in (validate_dataset, validate_snapshot):
        try:
            validate(text)
        except ValidationError as e:
            assert e.message
        else:
            assert _ZFS_NAME.fullmatch(text), text
            assert not text.startswith("-") and "\n" not in text
    try:
        validate_host(text)
    except ValidationError:
        pass
    else:
        assert re.fullmatch(r"[A-Za-z0-9.\-]+", text) and not text.startswith("-"), text


def test_malformed_envelopes_are_refused(netbed: Callable[..., NetBed]) -> None:
    """Positional arguments, missing arguments: refused, nothing runs, the worker lives on.

    Missing or wrong keyword arguments get the contract's `validation` record. Positional
    arguments never reach zrepq's code: Python refuses the call (a TypeError saying so).
    """
    bed = netbed(2)
    app = producer(bed).app
    before = _calls(bed)
    pid = bed["na"].worker.pid if bed["na"].worker else None
    cases: list[tuple[str, list[Any] | None, dict[str, Any] | None, str]] = [
        (c.SYNC, ["tank/data"], None, "positional argument"),
        (c.SYNC, ["na", "tank/data"], {"host": "na"}, "positional argument"),
        (c.SYNC_ALL, [1], {"host": "na"}, "positional argument"),
        (c.SYNC, None, {}, "host: Field required; fs: Field required"),
        (c.STATUS, None, None, "host: Field required"),
        (c.INIT, None, {"host": "na", "fs": "tank/a"}, "dest_host: Field required"),
    ]
    for name, args, kwargs, says in cases:
        r = app.send_task(name, args=args, kwargs=kwargs, queue=c.queue_for("na"))
        r.get(timeout=30, propagate=False)
        assert r.state == "FAILURE", (name, args, kwargs)
        if isinstance(r.result, TaskFailed):
            assert r.result.record["kind"] == "validation"
            assert says in r.result.record["message"], r.result.record
        else:
            assert isinstance(r.result, TypeError) and says in str(r.result), r.result
    assert _calls(bed) == before
    assert bed["na"].worker is not None and bed["na"].worker.pid == pid
