"""failover/takeover, refresh, rollback sync, status/list output, and the side commands."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable

import pytest

from tests.harness.fleet import Fleet, Site
from tests.integration.test_engine_sync import holds, prop, snaps
from workers.cli import main as zrepq_local
from workers.engine import run
from workers.engine.errors import SplitBrain, StateError
from workers.engine.requests import (
    ChangeconfigRequest,
    ClearRequest,
    FailoverRequest,
    InitRequest,
    LastsentRequest,
    RefreshRequest,
    RollbackRequest,
    SentsyncRequest,
    SyncRequest,
    TakeoverRequest,
)


@pytest.fixture
def pair(fleet: Callable[..., Fleet]) -> tuple[Fleet, Site, Site]:
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    a.zfs.zfs("create", a.fs("prod"))
    a.zfs.write(a.fs("prod"), "data.txt", b"version 1\n")
    run(f.context("hosta"), InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod")))
    return f, a, b


def cli(f: Fleet, host: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    code, out, _err = cli3(f, host, *args, env=env)
    return code, out


def cli3(
    f: Fleet, host: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = zrepq_local(list(args), context=f.context(host, env), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_failover_and_takeover_swap_roles_and_sync_back(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "data.txt", b"version 2\n")
    res = run(f.context("hosta"), FailoverRequest(fs=src))
    assert res.role == "standby" and res.synced == f"{src}@zrep_000001"
    # The old master is a read-only standby now, the old standby a writable master.
    assert prop(a, "zrep:master", src) == "-" and prop(a, "readonly", src) == "on"
    assert prop(a, "zrep:src-host", src) == "hostb" and prop(a, "zrep:dest-host", src) == "hosta"
    assert prop(b, "zrep:master", dst) == "yes" and prop(b, "zrep:master", dst, "source") == "local"
    assert prop(b, "readonly", dst) == "off"
    assert prop(b, "zrep:src-fs", dst) == dst and prop(b, "zrep:dest-fs", dst) == src
    assert b.zfs.read(dst, "data.txt") == b"version 2\n"
    # Replication now runs the other way.
    b.zfs.write(dst, "data.txt", b"version 3 from b\n")
    back = run(f.context("hostb"), SyncRequest(fs=dst))
    assert back.snapshot == f"{dst}@zrep_000002"
    assert a.zfs.read(src, "data.txt") == b"version 3 from b\n"
    # takeover from the original side asks hostb to fail over, which hands back to hosta.
    res2 = run(f.context("hosta"), TakeoverRequest(fs=src))
    assert res2.role == "master"
    assert prop(a, "zrep:master", src) == "yes" and prop(b, "zrep:master", dst) == "-"
    assert run(f.context("hosta"), SyncRequest(fs=src)).status == "synced"


def test_repeated_failover_and_takeover_do_no_harm(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    src, dst = a.fs("prod"), b.fs("prod")
    run(f.context("hosta"), FailoverRequest(fs=src))
    again = run(f.context("hosta"), FailoverRequest(fs=src))  # a re-delivered message
    assert "already standby" in again.message
    again2 = run(f.context("hostb"), TakeoverRequest(fs=dst, local_only=True))
    assert "already master" in again2.message
    assert prop(b, "zrep:master", dst) == "yes" and prop(a, "zrep:master", src) == "-"


def test_takeover_refused_while_the_old_master_still_claims_master(
    pair: tuple[Fleet, Site, Site],
) -> None:
    f, _a, b = pair
    with pytest.raises(SplitBrain, match="still master"):
        run(f.context("hostb"), TakeoverRequest(fs=b.fs("prod"), local_only=True))
    assert prop(b, "zrep:master", b.fs("prod")) == "-"
    run(
        f.context("hostb"), TakeoverRequest(fs=b.fs("prod"), local_only=True, force=True)
    )  # admin knows better
    assert prop(b, "zrep:master", b.fs("prod")) == "yes"


def test_failover_local_rolls_back_to_last_sent(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, _b = pair
    src = a.fs("prod")
    a.zfs.write(src, "unsynced.txt", b"lost on failover -L")
    res = run(f.context("hosta"), FailoverRequest(fs=src, local_only=True))
    assert res.rolled_back_to == f"{src}@zrep_000000"
    assert not (a.zfs.mountpoint(src) / "unsynced.txt").exists()
    assert prop(a, "zrep:master", src) == "-"


def test_refresh_pulls_from_the_master(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "pulled.txt", b"pulled\n")
    res = run(f.context("hostb"), RefreshRequest(fs=dst))
    assert res.status == "synced" and res.snapshot == f"{src}@zrep_000001"
    assert b.zfs.read(dst, "pulled.txt") == b"pulled\n"
    assert prop(a, "zrep:sent", f"{src}@zrep_000001", "source") == "local"
    with pytest.raises(StateError, match="master mode fs"):
        run(f.context("hosta"), RefreshRequest(fs=src))


def test_sync_to_snapshot_rolls_destination_back(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    src, dst = a.fs("prod"), b.fs("prod")
    ctx = f.context("hosta")
    for i in range(2):
        a.zfs.write(src, "data.txt", f"v{i + 2}\n".encode())
        run(ctx, SyncRequest(fs=src))
    res = run(ctx, RollbackRequest(snapshot=f"{src}@zrep_000000"))
    assert res.status == "rolled-back"
    assert snaps(b, dst) == ["zrep_000000"]
    assert b.zfs.read(dst, "data.txt") == b"version 1\n"
    assert run(ctx, LastsentRequest(fs=src)) == f"{src}@zrep_000000"
    assert holds(b, f"{dst}@zrep_000000") == ["zrepq:zrep:lastsent"]
    assert (
        run(ctx, SyncRequest(fs=src, force=True)).status == "synced"
    )  # and syncing continues from there


def test_status_and_list_print_zreps_formats(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, _b = pair
    src = a.fs("prod")
    a.zfs.zfs("create", a.fs("never"))
    a.zfs.zfs(
        "set",
        "zrep:dest-fs=poolb/never",
        "zrep:dest-host=hostb",
        "zrep:src-fs=poola/never",
        "zrep:src-host=hosta",
        "zrep:master=yes",
        a.fs("never"),
    )
    sent = int(prop(a, "zrep:sent", f"{src}@zrep_000000"))
    date = time.strftime("%Y/%m/%d-%H:%M:%S", time.localtime(sent))
    code, out = cli(f, "hosta", "status")
    assert code == 0
    assert out == f"{'poola/never':<52} last: [NEVER]\n{src:<52} last: {date}\n"
    code, out, err = cli3(f, "hosta", "status", "-v", src)
    assert out == f"{src:<25}->{'hostb:poolb/prod':<35} {date.rsplit(':', 1)[0]}\n"
    assert err == f"    last sent: {src}@zrep_000000  savecount: 5\n"  # zrepq's extras
    code, out = cli(f, "hosta", "list")
    assert out == "poola/never\npoola/prod\n"
    code, out = cli(f, "hosta", "list", "-v", src)
    lines = out.splitlines()
    assert lines[0] == f"{src}:" and lines[-1] == f"last snapshot synced: {src}@zrep_000000"
    assert "zrep:dest-host\thostb" in lines and "zrep:master\tyes" in lines
    code, out = cli(f, "hostb", "status", "-a")  # the standby lists received pairs
    assert out.startswith(f"{'poolb/prod':<52} last: ")
    code, out = cli(f, "hosta", "lastsent", src)
    assert out == f"{src}@zrep_000000\n"
    code, out = cli(f, "hosta", "--json", "status")
    assert '"last_sent": "poola/prod@zrep_000000"' in out
    code, out = cli(f, "hosta", "list", "-s", src)
    assert re.match(r"NAME\s+CREATION\npoola/prod@zrep_000000\s+\w{3} \w{3}", out)


def test_uptodate_snaponly_synconly(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    src, dst = a.fs("prod"), b.fs("prod")
    assert cli(f, "hosta", "uptodate", src)[0] == 0
    a.zfs.write(src, "data.txt", b"changed")
    assert cli(f, "hosta", "uptodate", src)[0] == 1
    code, out = cli(f, "hosta", "snaponly", src)
    assert (code, out) == (0, f"{src}@zrep_000001")
    assert snaps(b, dst) == ["zrep_000000"]
    code, _ = cli(f, "hosta", "synconly", src)
    assert code == 0 and snaps(b, dst) == ["zrep_000000", "zrep_000001"]
    assert cli(f, "hosta", "synconly", src)[0] == 0  # nothing new: already sent


def test_clear_removes_snapshots_properties_and_holds(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, _b = pair
    src = a.fs("prod")
    a.zfs.zfs("bookmark", f"{src}@zrep_000000", f"{src}#zrepq_other_000000")  # another tag's
    a.zfs.zfs("bookmark", f"{src}@zrep_000000", f"{src}#mine")
    destroyed = run(f.context("hosta"), ClearRequest(fs=src))
    # the snapshots and zrepq's cursor bookmark of the tag, no other bookmark
    assert destroyed == [f"{src}@zrep_000000", f"{src}#zrepq_zrep_000000"]
    assert snaps(a, src) == []
    out = a.zfs.zfs("list", "-H", "-o", "name", "-t", "bookmark", "-d", "1", src).stdout
    assert sorted(out.split()) == [f"{src}#mine", f"{src}#zrepq_other_000000"]
    out = a.zfs.zfs("get", "-H", "-o", "property", "-s", "local", "all", src).stdout
    assert "zrep:" not in out
    assert a.zfs.read(src, "data.txt") == b"version 1\n"  # the data stays


def test_changeconfig_and_sentsync(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    src, dst = a.fs("prod"), b.fs("prod")
    ctx = f.context("hosta")
    run(ctx, ChangeconfigRequest(fs=src, other_host="hostb", other_fs="poolb/renamed", force=True))
    assert prop(a, "zrep:dest-fs", src) == "poolb/renamed"
    run(ctx, ChangeconfigRequest(fs=src, other_host="hostb", other_fs=dst))
    with pytest.raises(StateError, match="not initialized"):
        a.zfs.zfs("create", a.fs("fresh"))
        run(ctx, ChangeconfigRequest(fs=a.fs("fresh"), other_host="hostb", other_fs="poolb/fresh"))
    # sentsync: recovery after a send whose completion was lost (manual transfer here).
    a.zfs.write(src, "data.txt", b"v2")
    a.zfs.zfs("snapshot", f"{src}@zrep_000001")
    a.zfs.sh(f"zfs send -i {src}@zrep_000000 {src}@zrep_000001 > /tmp/zrepq-ss.bin")
    b.zfs.sh(f"zfs recv {dst} < /tmp/zrepq-ss.bin")
    run(ctx, SentsyncRequest(snapshot=f"{src}@zrep_000001"))
    assert run(ctx, LastsentRequest(fs=src)) == f"{src}@zrep_000001"
    assert prop(b, "zrep:sent", f"{dst}@zrep_000001", "source") == "local"
    assert holds(b, f"{dst}@zrep_000001") == ["zrepq:zrep:lastsent"]


def test_tags_make_independent_pairs(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    src = a.fs("prod")
    off = f.context("hosta", {"ZREPTAG": "offsite"})
    run(off, InitRequest(fs=src, dest_host="hostb", dest_fs=b.fs("offsite-copy")))
    a.zfs.write(src, "data.txt", b"v2")
    run(off, SyncRequest(fs=src))
    assert snaps(b, b.fs("offsite-copy")) == ["offsite_000000", "offsite_000001"]
    assert "zrep_000000" in snaps(a, src)
    assert prop(a, "offsite:dest-fs", src) == b.fs("offsite-copy")
    _code, out = cli(f, "hosta", "-t", "offsite", "lastsent", src)
    assert out == f"{src}@offsite_000001\n"
    assert run(f.context("hosta"), LastsentRequest(fs=src)) == f"{src}@zrep_000000"


def test_recursive_pairs_never_carry_master_to_the_standby(fleet: Callable[..., Fleet]) -> None:
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    a.zfs.zfs("create", a.fs("tree"))
    a.zfs.zfs("create", a.fs("tree/child"))
    a.zfs.write(a.fs("tree/child"), "c.txt", b"child data")
    ctx = f.context("hosta", {"ZREP_R": "-R"})
    run(ctx, InitRequest(fs=a.fs("tree"), dest_host="hostb", dest_fs=b.fs("tree")))
    a.zfs.write(a.fs("tree/child"), "c.txt", b"child data 2")
    run(ctx, SyncRequest(fs=a.fs("tree")))
    assert b.zfs.read(b.fs("tree/child"), "c.txt") == b"child data 2"
    assert prop(b, "zrep:master", b.fs("tree")) == "-"
    assert snaps(b, b.fs("tree/child")) == ["zrep_000000", "zrep_000001"]


def test_interrupted_init_with_resume_keeps_partial_state_and_resumes(
    fleet: Callable[..., Fleet],
) -> None:
    """zrep issue 145: a partial init must not be thrown away when resume is on."""
    import os

    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    a.zfs.zfs("create", a.fs("big"))
    a.zfs.write(a.fs("big"), "blob", os.urandom(1_500_000))
    cut = {"ZREP_RESUME": "1", "ZREP_INFILTER": "head -c 600000"}
    with pytest.raises(Exception, match="RESUME set"):
        run(
            f.context("hosta", cut),
            InitRequest(fs=a.fs("big"), dest_host="hostb", dest_fs=b.fs("big")),
        )
    assert prop(b, "receive_resume_token", b.fs("big")) not in ("-", "")
    assert prop(a, "zrep:dest-fs", a.fs("big")) == b.fs("big")
    res = run(
        f.context("hosta", {"ZREP_RESUME": "1"}),
        InitRequest(fs=a.fs("big"), dest_host="hostb", dest_fs=b.fs("big")),
    )
    assert res.resumed
    assert b.zfs.tree(b.fs("big")) == a.zfs.tree(a.fs("big"))
    assert prop(a, "zrep:master", a.fs("big")) == "yes"


def test_failed_init_without_resume_leaves_no_trace(fleet: Callable[..., Fleet]) -> None:
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    a.zfs.zfs("create", a.fs("x"))
    a.zfs.write(a.fs("x"), "f", b"y" * 400_000)
    with pytest.raises(Exception, match="Resetting"):
        off = {"ZREP_RESUME": "no", "ZREP_INFILTER": "head -c 1000"}
        run(
            f.context("hosta", off), InitRequest(fs=a.fs("x"), dest_host="hostb", dest_fs=b.fs("x"))
        )
    assert snaps(a, a.fs("x")) == []
    assert prop(a, "zrep:dest-fs", a.fs("x")) == "-"
    assert b.zfs.zfs("list", b.fs("x"), check=False).returncode != 0


def test_changeconfig_on_the_standby_side(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    dst = b.fs("prod")
    run(
        f.context("hostb"),
        ChangeconfigRequest(fs=dst, other_host="hosta", other_fs=a.fs("prod"), dest_side=True),
    )
    for key, value in {
        "src-fs": a.fs("prod"),
        "src-host": "hosta",
        "dest-fs": dst,
        "dest-host": "hostb",
        "savecount": "5",
    }.items():
        assert prop(b, f"zrep:{key}", dst) == value
        assert prop(b, f"zrep:{key}", dst, "source") == "local"
