"""issue 12, point 2: `handback` gives a pair back to zrep exactly as zrep keeps it.

It removes what zrepq added (its holds on both sides, `zrepq:TAG:*` properties, a partial
receive) and nothing else; after it, zrep's sync and expire run with nothing in their way.
"""

from __future__ import annotations

import io
import os

import pytest

from tests.coexist.conftest import HOLD, Pair
from tests.harness.zfs_backend import ZfsBackend, get, ok
from workers import cli
from workers.engine import run
from workers.engine.errors import LockHeld, PipelineError
from workers.engine.locks import lock_name
from workers.engine.requests import HandbackRequest, InitRequest, PauseRequest, SyncRequest


def zrep_state(b: ZfsBackend, fs: str) -> dict[str, str]:
    """Everything zrep keeps on one side: its properties (with source) on the filesystem and
    every snapshot, and each snapshot's guid; lock marks excluded (they come and go)."""
    out = ok(b, "get", "-H", "-p", "-d", "1", "-t", "filesystem,snapshot",
             "-o", "name,property,value,source", "all", fs)  # fmt: skip
    state = {}
    for line in out.splitlines():
        name, prop, value, source = line.split("\t")
        if (prop.startswith("zrep:") and "lock-" not in prop) or (prop == "guid" and "@" in name):
            state[f"{name} {prop}"] = f"{value} ({source})"
    return state


def zrepq_marks(b: ZfsBackend, fs: str) -> list[str]:
    """zrepq's own properties and holds on fs and its snapshots."""
    out = ok(b, "get", "-H", "-d", "1", "-t", "filesystem,snapshot", "-o", "name,property",
             "all", fs)  # fmt: skip
    marks = [ln for ln in out.splitlines() if "\tzrepq:" in ln]
    held = ok(b, "get", "-H", "-p", "-d", "1", "-t", "snapshot", "-o", "name,value", "userrefs", fs)
    for line in held.splitlines():
        name, refs = line.split("\t")
        if refs != "0":
            marks += [ln for ln in ok(b, "holds", "-H", name).splitlines() if HOLD in ln]
    return marks


def bookmarks(b: ZfsBackend, fs: str) -> list[str]:
    out = ok(b, "list", "-H", "-t", "bookmark", "-o", "name", "-d", "1", fs)
    return sorted(line.split("#", 1)[1] for line in out.split())


def make_zrepq_pair_with_everything(p: Pair) -> None:
    """A pair zrepq ran for a while: holds, pause, an error flag and a partial receive."""
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    for i in range(2):
        p.write("f", f"{i}".encode())
        run(ctx, SyncRequest(fs=p.src))
    run(ctx, PauseRequest(fs=p.src, reason="moving back to zrep"))
    p.write("big", os.urandom(1_500_000))
    cut = p.context({"ZREP_INFILTER": "head -c 400000"})
    with pytest.raises(PipelineError):
        # resume on: the partial receive stays, flag up
        run(cut, SyncRequest(fs=p.src, ignore_pause=True))
    assert get(p.b, "receive_resume_token", p.dst) != "-"
    assert get(p.b, "zrepq:zrep:last-error", p.src) != "-"
    assert zrepq_marks(p.b, p.src) and zrepq_marks(p.b, p.dst)


def test_handback_removes_only_what_zrepq_added(pair: Pair) -> None:
    p = pair
    make_zrepq_pair_with_everything(p)
    # beside zrepq's cursor (made by each sync): another tag's cursor, someone's own
    # bookmark, and on the standby a cursor of ours left from when it was the master
    ok(p.b, "bookmark", f"{p.src}@zrep_000001", f"{p.src}#zrepq_other_000001")
    ok(p.b, "bookmark", f"{p.src}@zrep_000001", f"{p.src}#mine")
    ok(p.b, "bookmark", f"{p.dst}@zrep_000001", f"{p.dst}#zrepq_zrep_000001")
    assert bookmarks(p.b, p.src) == ["mine", "zrepq_other_000001", "zrepq_zrep_000002"]
    before = zrep_state(p.b, p.src), zrep_state(p.b, p.dst)
    res = run(p.context(), HandbackRequest(fs=p.src))
    assert res.released == [f"hosta:{p.src}@zrep_000002", f"hostb:{p.dst}@zrep_000002"]
    assert res.bookmarks == [f"hosta:{p.src}#zrepq_zrep_000002", f"hostb:{p.dst}#zrepq_zrep_000001"]
    assert bookmarks(p.b, p.src) == ["mine", "zrepq_other_000001"]
    assert bookmarks(p.b, p.dst) == []
    assert res.aborted == [f"hostb:{p.dst}"]
    assert {r.split()[1] for r in res.properties} >= {
        "zrepq:zrep:paused",
        "zrepq:zrep:last-error",
    }
    assert (zrep_state(p.b, p.src), zrep_state(p.b, p.dst)) == before
    assert zrepq_marks(p.b, p.src) == [] and zrepq_marks(p.b, p.dst) == []
    assert get(p.b, "receive_resume_token", p.dst) == "-"
    assert get(p.b, "zrep:lock-pid", p.src) == "-"

    # zrep from here on, as if zrepq had never been there: nothing in the way
    zrep = p.zrep()
    for i in range(2):  # 0..3 and 0..2 now: expiry starts with the second
        p.write("f", f"zrep {i}".encode())
        zrun = zrep.sync(p.src)
        assert zrun.rc == 0 and zrun.stderr == "", zrun
        assert zrun.stdout.startswith(f"sending {p.src}@zrep_{4 + i:06x} to hostb:{p.dst}\n")
    zrun = zrep.expire(p.src)
    assert zrun.rc == 0 and zrun.stderr == "", zrun
    assert zrun.stdout.splitlines() == [
        f"Expiring zrep snaps on {p.src}",
        f"Also running expire on hostb:{p.dst} now...",
        f"Expiring zrep snaps on {p.dst}",
    ]
    assert p.look() == ((5, 5), ({}, {}))


def test_handback_from_the_standby_and_of_one_side_only(standin_pair: Pair) -> None:
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    run(ctx, PauseRequest(fs=p.src))
    res = run(
        p.context(host="hostb"), HandbackRequest(fs=p.dst, local_only=True)
    )  # the master is gone, say
    assert (res.other_host, res.released) == (None, [f"hostb:{p.dst}@zrep_000000"])
    assert p.holds() == ({"zrep_000000": [HOLD]}, {})
    res = run(p.context(host="hostb"), HandbackRequest(fs=p.dst))  # both sides, run on the standby
    assert (res.other_host, res.other_fs) == ("hosta", p.src)
    assert res.released == [f"hosta:{p.src}@zrep_000000"]
    assert f"hosta:{p.src} zrepq:zrep:paused" in res.properties
    assert p.holds() == ({}, {}) and zrepq_marks(p.b, p.src) == []


def test_handback_waits_for_no_one_a_busy_pair_is_refused_untouched(standin_pair: Pair) -> None:
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    # hostb's side busy: its lease, as hostb's worker takes it (hosta's only checks it).
    busy = ctx.locks.hold([lock_name("zrep", "hostb", p.dst)], operation="sync")
    with busy, pytest.raises(LockHeld, match=rf"Cannot lock {p.src}\. Cannot continue"):
        run(ctx, HandbackRequest(fs=p.src))
    assert p.holds() == ({"zrep_000000": [HOLD]}, {"zrep_000000": [HOLD]})


def test_zrepq_local_handback(standin_pair: Pair) -> None:
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["handback", p.src], context=ctx, out=out, err=err) == 0, err.getvalue()
    assert out.getvalue().splitlines() == [
        f"hosta:{p.src}: released {HOLD} where held",
        f"hosta:{p.src}: destroyed zrepq's replication cursor {p.src}#zrepq_zrep_000000",
        f"hostb:{p.dst}: released {HOLD} where held",
        f"{p.src}: handed back; zrep's own state is untouched",
    ]
    assert p.holds() == ({}, {}) and bookmarks(p.b, p.src) == []
    assert cli.main(["handback"], context=ctx, out=out, err=err) == 2  # usage
