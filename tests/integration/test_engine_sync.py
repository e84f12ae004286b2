"""init, sync and their fixed zrep defects, with the engine on hosta and hostb behind sshd."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.fleet import Fleet, Site
from tests.harness.pids import FAKE_ZREP
from workers.engine import run
from workers.engine.context import Context
from workers.engine.errors import (
    CommandError,
    Conflict,
    HostKeyError,
    LockHeld,
    NotConfigured,
    PipelineError,
    SplitBrain,
    StateError,
    ValidationError,
)
from workers.engine.events import StreamProgress
from workers.engine.requests import ExpireRequest, InitRequest, LastsentRequest, SyncRequest
from workers.exec.remote import ParamikoRunner
from workers.exec.ssh_options import SshOptions


def prop(site: Site, name: str, ds: str, field: str = "value") -> str:
    return site.zfs.zfs("get", "-H", "-o", field, name, ds).stdout.strip()


def snaps(site: Site, fs: str) -> list[str]:
    out = site.zfs.zfs(
        "list", "-H", "-t", "snapshot", "-o", "name", "-s", "createtxg", "-d", "1", fs
    ).stdout
    return [line.split("@", 1)[1] for line in out.splitlines() if line]


def holds(site: Site, snap: str) -> list[str]:
    out = site.zfs.zfs("holds", "-H", snap).stdout
    return [line.split("\t")[1] for line in out.splitlines() if line]


@pytest.fixture
def pair(fleet: Callable[..., Fleet]) -> tuple[Fleet, Site, Site]:
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    a.zfs.zfs("create", a.fs("prod"))
    a.zfs.write(a.fs("prod"), "hello.txt", b"hello\n")
    a.zfs.write(a.fs("prod"), "dir/big.bin", os.urandom(300_000))
    return f, a, b


def init(f: Fleet, a: Site, b: Site, **env: str) -> None:
    run(
        f.context("hosta", env),
        InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod")),
    )


def test_init_lays_out_zreps_on_disk_contract(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    res = run(
        f.context("hosta"), InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod"))
    )
    src, dst = a.fs("prod"), b.fs("prod")
    assert res.snapshot == f"{src}@zrep_000000" and res.bytes_sent > 300_000
    for k, v in {
        "src-fs": src,
        "src-host": "hosta",
        "dest-fs": dst,
        "dest-host": "hostb",
        "savecount": "5",
        "master": "yes",
    }.items():
        assert prop(a, f"zrep:{k}", src) == v
        assert prop(a, f"zrep:{k}", src, "source") == "local"
    # The standby got the pair's properties as *received* ones, and not zrep:master.
    assert prop(b, "zrep:src-host", dst) == "hosta"
    assert prop(b, "zrep:src-host", dst, "source") == "received"
    assert prop(b, "zrep:master", dst) == "-"
    assert prop(b, "readonly", dst) == "on"
    assert snaps(a, src) == snaps(b, dst) == ["zrep_000000"]
    assert prop(a, "guid", f"{src}@zrep_000000") == prop(b, "guid", f"{dst}@zrep_000000")
    assert prop(a, "zrep:sent", f"{src}@zrep_000000", "source") == "local"
    assert b.zfs.tree(dst) == a.zfs.tree(src)
    # The incremental base is held on both sides.
    assert holds(a, f"{src}@zrep_000000") == ["zrepq:zrep:lastsent"]
    assert holds(b, f"{dst}@zrep_000000") == ["zrepq:zrep:lastsent"]
    # The lock is gone again.
    assert prop(a, "zrep:lock-pid", src) == "-"


def test_init_refuses_existing_destination_and_configured_source(
    pair: tuple[Fleet, Site, Site],
) -> None:
    f, a, b = pair
    b.zfs.zfs("create", b.fs("prod"))
    with pytest.raises(StateError, match="already exists! Will not overwrite without -f"):
        run(
            f.context("hosta"),
            InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod")),
        )
    assert snaps(a, a.fs("prod")) == []  # nothing happened
    assert prop(a, "zrep:dest-fs", a.fs("prod")) == "-"
    run(
        f.context("hosta"),
        InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod"), force=True),
    )
    with pytest.raises(StateError, match="already a zrep master"):
        run(
            f.context("hosta"),
            InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("other")),
        )


def test_sync_sends_incremental_and_moves_hold(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b)
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "hello.txt", b"changed\n")
    a.zfs.write(src, "new.txt", b"new file\n")
    (a.zfs.mountpoint(src) / "dir" / "big.bin").unlink()
    ctx = f.context("hosta")
    res = run(ctx, SyncRequest(fs=src))
    assert res.status == "synced" and res.snapshot == f"{src}@zrep_000001"
    assert res.base == f"{src}@zrep_000000"
    assert b.zfs.tree(dst) == a.zfs.tree(src)
    assert b.zfs.read(dst, "hello.txt") == b"changed\n"
    assert snaps(b, dst) == ["zrep_000000", "zrep_000001"]
    assert prop(b, "zrep:sent", f"{dst}@zrep_000001", "source") == "local"
    assert holds(a, f"{src}@zrep_000001") == ["zrepq:zrep:lastsent"]
    assert holds(a, f"{src}@zrep_000000") == []
    assert holds(b, f"{dst}@zrep_000000") == []
    assert run(ctx, LastsentRequest(fs=src)) == f"{src}@zrep_000001"
    assert any(isinstance(e, StreamProgress) for e in f.events) or res.bytes_sent < 1 << 20


def test_sync_changed_only_skips_unchanged(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b)
    res = run(f.context("hosta"), SyncRequest(fs=a.fs("prod"), changed_only=True))
    assert res.status == "unchanged"
    assert snaps(a, a.fs("prod")) == ["zrep_000000"]
    a.zfs.write(a.fs("prod"), "x", b"x")
    assert (
        run(f.context("hosta"), SyncRequest(fs=a.fs("prod"), changed_only=True)).status == "synced"
    )


def test_expire_each_side_with_its_own_savecount(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b, ZREP_SAVE_COUNT="2")
    src, dst = a.fs("prod"), b.fs("prod")
    b.zfs.zfs("set", "zrep:savecount=4", dst)  # the standby keeps more
    ctx = f.context("hosta")
    for i in range(6):
        a.zfs.write(src, "n", str(i).encode())
        run(ctx, SyncRequest(fs=src))
    # master: last sent (6) + savecount-1 = 1 older; standby: newest 4.
    assert snaps(a, src) == ["zrep_000005", "zrep_000006"]
    assert snaps(b, dst) == ["zrep_000003", "zrep_000004", "zrep_000005", "zrep_000006"]
    res = run(ctx, ExpireRequest(fs=src))
    assert res.destroyed == [] and res.remote_destroyed == []


def test_landed_stream_is_completed_not_renamed_unsent(pair: tuple[Fleet, Site, Site]) -> None:
    """zrep issue 203: the data arrived, the completion was never recorded."""
    f, a, b = pair
    init(f, a, b)
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "late.txt", b"arrived\n")
    # What a worker killed after `zfs recv` but before `zfs set zrep:sent` leaves behind:
    a.zfs.zfs("snapshot", f"{src}@zrep_000001")
    a.zfs.sh(f"zfs send -I {src}@zrep_000000 {src}@zrep_000001 > /tmp/zrepq-s.bin")
    b.zfs.sh(f"zfs recv {dst} < /tmp/zrepq-s.bin")
    res = run(f.context("hosta"), SyncRequest(fs=src))
    assert res.completed == [f"{src}@zrep_000001"]
    assert res.snapshot == f"{src}@zrep_000002" and res.base == f"{src}@zrep_000001"
    assert "zrep_000001_unsent" not in snaps(a, src)
    assert b.zfs.read(dst, "late.txt") == b"arrived\n"


def test_failed_send_renames_unsent_and_next_sync_carries_it(
    pair: tuple[Fleet, Site, Site],
) -> None:
    f, a, b = pair
    init(f, a, b)
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "v", b"1")
    with pytest.raises(PipelineError) as exc:
        run(f.context("hosta", {"ZREP_INFILTER": "head -c 100"}), SyncRequest(fs=src))
    assert "_unsent" in str(exc.value)
    assert snaps(a, src) == ["zrep_000000", "zrep_000001_unsent"]
    assert snaps(b, dst) == ["zrep_000000"]
    assert prop(a, "zrep:lock-pid", src) == "-"  # released on the error path
    res = run(f.context("hosta"), SyncRequest(fs=src))
    assert res.snapshot == f"{src}@zrep_000002"
    assert snaps(b, dst) == ["zrep_000000", "zrep_000001_unsent", "zrep_000002"]
    assert b.zfs.read(dst, "v") == b"1"


def test_resumable_sync_resumes_a_cut_stream(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b, ZREP_RESUME="1")
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "big2.bin", os.urandom(2_000_000))
    with pytest.raises(PipelineError, match="resum"):
        run(
            f.context("hosta", {"ZREP_RESUME": "1", "ZREP_INFILTER": "head -c 1000000"}),
            SyncRequest(fs=src),
        )
    token = prop(b, "receive_resume_token", dst)
    assert token not in ("-", "")
    assert snaps(a, src) == ["zrep_000000", "zrep_000001"]  # kept, not renamed
    res = run(f.context("hosta", {"ZREP_RESUME": "1"}), SyncRequest(fs=src))
    assert res.resumed and res.completed == [f"{src}@zrep_000001"]
    assert res.bytes_sent < 2_000_000 + 500_000  # the resumed part, not all again
    assert prop(b, "receive_resume_token", dst) == "-"
    assert b.zfs.tree(dst) == a.zfs.tree(src)


def test_partial_state_without_resume_is_aborted_then_synced(
    pair: tuple[Fleet, Site, Site],
) -> None:
    f, a, b = pair
    init(f, a, b, ZREP_RESUME="1")
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "big2.bin", os.urandom(1_500_000))
    with pytest.raises(PipelineError):
        run(
            f.context("hosta", {"ZREP_RESUME": "1", "ZREP_INFILTER": "head -c 700000"}),
            SyncRequest(fs=src),
        )
    assert prop(b, "receive_resume_token", dst) not in ("-", "")
    res = run(
        f.context("hosta"), SyncRequest(fs=src)
    )  # resume off now: the stale partial state is aborted
    assert res.status == "synced"
    assert prop(b, "receive_resume_token", dst) == "-"
    assert b.zfs.tree(dst) == a.zfs.tree(src)


def test_split_brain_is_refused_and_nothing_changes(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b)
    b.zfs.zfs("set", "zrep:master=yes", b.fs("prod"))
    with pytest.raises(SplitBrain, match="Split brain detected"):
        run(f.context("hosta"), SyncRequest(fs=a.fs("prod")))
    assert snaps(a, a.fs("prod")) == ["zrep_000000"]


def test_diverged_destination_is_a_conflict_until_forced(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b)
    dst = b.fs("prod")
    b.zfs.zfs("snapshot", f"{dst}@manual")
    with pytest.raises(Conflict, match="diverged"):
        run(f.context("hosta"), SyncRequest(fs=a.fs("prod")))
    assert snaps(a, a.fs("prod")) == ["zrep_000000"]  # refused before any snapshot
    res = run(f.context("hosta"), SyncRequest(fs=a.fs("prod"), force=True))
    assert res.status == "synced" and "manual" not in snaps(b, dst)


def test_modified_destination_needs_force(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b)
    dst = b.fs("prod")
    b.zfs.zfs("set", "readonly=off", dst)
    b.zfs.write(dst, "oops.txt", b"written on the standby")
    with pytest.raises(Conflict, match="modified since"):
        run(f.context("hosta"), SyncRequest(fs=a.fs("prod")))
    run(f.context("hosta"), SyncRequest(fs=a.fs("prod"), force=True))
    assert not (b.zfs.mountpoint(dst) / "oops.txt").exists()


def test_lease_held_elsewhere_refuses_and_quiet_mode_skips(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    init(f, a, b)
    ctx = f.context("hosta")
    with ctx.locks.hold(["hosta:zrep:poola/prod"], operation="test"):
        with pytest.raises(LockHeld):
            run(ctx, SyncRequest(fs=a.fs("prod")))
        assert run(ctx, SyncRequest(fs=a.fs("prod"), quiet_secs=3600)).status == "skipped"
    assert run(ctx, SyncRequest(fs=a.fs("prod"))).status == "synced"


def test_live_local_zrep_lock_is_respected(pair: tuple[Fleet, Site, Site]) -> None:
    import subprocess

    f, a, b = pair
    init(f, a, b)
    zrep = subprocess.Popen(["bash", "-c", "exec -a /usr/local/bin/zrep sleep 30"])
    try:
        a.zfs.zfs("set", f"zrep:lock-pid={zrep.pid}", a.fs("prod"))
        with pytest.raises(LockHeld, match=rf"is locked by pid {zrep.pid} \(/usr/local/bin/zrep"):
            run(f.context("hosta"), SyncRequest(fs=a.fs("prod")))
        assert prop(a, "zrep:lock-pid", a.fs("prod")) == str(zrep.pid)  # not ours to clear
    finally:
        zrep.kill()
        zrep.wait()
    assert (
        run(f.context("hosta"), SyncRequest(fs=a.fs("prod"))).status == "synced"
    )  # stale pid: overridden


def test_not_configured_and_bad_names_run_nothing(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    ctx = f.context("hosta")
    with pytest.raises(NotConfigured, match=r"not master\. Cannot sync"):
        run(ctx, SyncRequest(fs=a.fs("prod")))
    before = len(a.zfs.calls())
    for bad in ("poola/prod; zfs destroy -r poola", "$(reboot)", "-F", "poola/`id`"):
        with pytest.raises(ValidationError):
            run(ctx, SyncRequest(fs=bad))
        with pytest.raises(ValidationError):
            run(ctx, InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=bad))
    with pytest.raises(ValidationError):
        run(ctx, InitRequest(fs=a.fs("prod"), dest_host="hostb;id", dest_fs=b.fs("prod")))
    assert len(a.zfs.calls()) == before


def test_compression_filters_carry_the_stream(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    env = {"ZREP_OUTFILTER": "zstd -c -q", "ZREP_INFILTER": "zstd -dc -q"}
    init(f, a, b, **env)
    a.zfs.write(a.fs("prod"), "text.txt", b"compressible " * 50_000)
    run(f.context("hosta", env), SyncRequest(fs=a.fs("prod")))
    assert b.zfs.tree(b.fs("prod")) == a.zfs.tree(a.fs("prod"))


def test_changed_host_key_is_refused_naming_the_host(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, b = pair
    f.cluster.regenerate_host_key("hostb")
    try:
        with pytest.raises(HostKeyError, match="hostb") as exc:
            run(
                f.context("hosta"),
                InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod")),
            )
        assert "changed" in str(exc.value).lower()
        assert prop(a, "zrep:dest-fs", a.fs("prod")) == "-"  # nothing was set up
    finally:
        f.cluster._write_client_files()  # trust the new key again for later tests


def test_unknown_host_key_is_refused_not_accepted(
    pair: tuple[Fleet, Site, Site], tmp_path: Path
) -> None:
    f, a, b = pair
    empty = tmp_path / "known_hosts"
    empty.touch()
    cfg = f.cluster.write_client_config(tmp_path / "ssh_config", known_hosts=empty)
    ctx = f.context("hosta", ssh=SshOptions(config_file=str(cfg)))
    with pytest.raises(HostKeyError, match="hostb"):
        run(ctx, InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod")))
    assert prop(a, "zrep:dest-fs", a.fs("prod")) == "-"
    assert empty.read_text() == ""  # and nothing was written into known_hosts


def test_stale_resume_token_is_aborted_and_sync_retried_plain(
    pair: tuple[Fleet, Site, Site],
) -> None:
    """Resume on, but the token's snapshot is gone on the source: `send -t` cannot work."""
    f, a, b = pair
    init(f, a, b, ZREP_RESUME="1")
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.write(src, "big2.bin", os.urandom(1_500_000))
    with pytest.raises(PipelineError):
        run(
            f.context("hosta", {"ZREP_RESUME": "1", "ZREP_INFILTER": "head -c 700000"}),
            SyncRequest(fs=src),
        )
    assert prop(b, "receive_resume_token", dst) not in ("-", "")
    a.zfs.zfs("destroy", f"{src}@zrep_000001")  # e.g. an admin's clean-up
    res = run(f.context("hosta", {"ZREP_RESUME": "1"}), SyncRequest(fs=src))
    assert res.status == "synced" and not res.resumed
    assert prop(b, "receive_resume_token", dst) == "-"
    assert b.zfs.tree(dst) == a.zfs.tree(src)
    assert any("stale" in getattr(e, "text", "") for e in f.events)


def test_a_sync_of_an_unchanged_dataset_makes_13_zfs_calls_8_on_the_source(
    pair: tuple[Fleet, Site, Site],
) -> None:
    """Calls, not bytes, are what a `sync all` of many small datasets pays for: the other side
    is read in one `zfs get`, at the start only (issue 17: the expire reuses both sides' lists
    read under the lease, plus the snapshot just sent), and the send's own estimate replaces
    `zfs send -nvP`. The source is read once, under the lease (issue 17): its properties,
    zrep's lock marks, its snapshots and bookmarks in one `zfs get -d 1`, where it took three
    reads before (its properties before locking, `lock-pid` under the global lock, the
    snapshots after). With no zrep installed on the host (none here: `zreplock.zrep_program`),
    zrep's lock marks are read there and not set: 8 calls on the source, 4 fewer than with
    them (the test below). The replication cursor costs two (`zfs bookmark` of the new one,
    `zfs destroy` of the old). 16 in all before issue 17 and the cursor, 18 (12 on the source,
    6 on the standby) with the cursor and the marks."""
    f, a, b = pair
    init(f, a, b)
    ctx = f.context("hosta")
    run(ctx, SyncRequest(fs=a.fs("prod")))  # warm: the old base has a hold to release from here on
    na, nb = len(a.zfs.zfs_calls()), len(b.zfs.zfs_calls())
    res = run(ctx, SyncRequest(fs=a.fs("prod")))
    assert res.status == "synced"
    on_a = [argv[1] for argv in a.zfs.zfs_calls()[na:]]
    on_b = [argv[1] for argv in b.zfs.zfs_calls()[nb:]]
    # the state (with zrep's lock marks and the bookmarks); snapshot, send, sent, hold,
    # release, the cursor moved
    assert sorted(on_a) == sorted(
        ["get", "snapshot", "send", "set", "hold", "release", "bookmark", "destroy"]
    ), on_a
    assert a.zfs.zfs_calls()[na][1:4] == ["get", "-H", "-p"] and "-d" in a.zfs.zfs_calls()[na]
    # the state at the start (nothing re-read for the expire), recv, sent, hold, release
    assert sorted(on_b) == sorted(["get", "recv", "set", "hold", "release"])
    assert holds(b, f"{b.fs('prod')}@zrep_000002") == ["zrepq:zrep:lastsent"]
    assert holds(a, f"{a.fs('prod')}@zrep_000001") == []
    assert prop(a, "zrep:lock-pid", a.fs("prod"), "source") == "-"  # never set


def test_with_zrep_installed_a_sync_sets_and_clears_its_lock_marks(
    pair: tuple[Fleet, Site, Site], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream `zrep` on the PATH of the engine's process (`lock_marks = auto`): zrep's
    `lock-pid`/`lock-time` are set under zrep's global lock, read again and cleared at the end,
    as zrep does: the same sync as above makes 4 more calls on the source (12), none more on
    the destination. `never` makes the 8 again with zrep there."""
    f, a, b = pair
    init(f, a, b)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "zrep").symlink_to(FAKE_ZREP)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ctx = f.context("hosta")
    run(ctx, SyncRequest(fs=a.fs("prod")))
    counts = []
    for env in ({}, {"ZREPQ_LOCK_MARKS": "never"}):
        na, nb = len(a.zfs.zfs_calls()), len(b.zfs.zfs_calls())
        assert run(f.context("hosta", env), SyncRequest(fs=a.fs("prod"))).status == "synced"
        on_a = [argv[1:] for argv in a.zfs.zfs_calls()[na:]]
        counts.append((len(on_a), len(b.zfs.zfs_calls()) - nb))
        if not env:
            fs = a.fs("prod")
            sets = [c for c in on_a if c[0] == "set" and "zrep:lock-pid" in " ".join(c)]
            assert len(sets) == 1 and any(x.startswith("zrep:lock-time=") for x in sets[0])
            assert ["inherit", "zrep:lock-time", fs] in on_a
            assert ["inherit", "zrep:lock-pid", fs] in on_a
            assert on_a[-1] == ["inherit", "zrep:lock-pid", fs]  # zrep's order, last
    assert counts == [(12, 5), (8, 5)]
    assert prop(a, "zrep:lock-pid", a.fs("prod"), "source") == "-"  # cleared


def _at_savecount_2(f: Fleet, a: Site, b: Site) -> tuple[str, str, Context]:
    """A pair with savecount 2 and two syncs made: the next sync expires one snapshot a side."""
    init(f, a, b, ZREP_SAVE_COUNT="2")
    src, dst = a.fs("prod"), b.fs("prod")
    ctx = f.context("hosta")
    for _ in range(2):
        run(ctx, SyncRequest(fs=src))
    return src, dst, ctx


def test_a_sync_that_expires_one_snapshot_per_side_reads_the_standby_once(
    pair: tuple[Fleet, Site, Site],
) -> None:
    """Savecount reached: the sync's expire destroys one snapshot per side, from both sides'
    lists read at the start under the lease, plus the snapshot just sent (`JustSent`). 15
    zfs calls: 9 on the master (no zrep installed: no lock marks), 6 on the standby (7 before
    issue 17's second step: the standby was read again for the expire)."""
    f, a, b = pair
    src, dst, ctx = _at_savecount_2(f, a, b)
    assert snaps(a, src) == snaps(b, dst) == ["zrep_000001", "zrep_000002"]
    na, nb = len(a.zfs.zfs_calls()), len(b.zfs.zfs_calls())
    res = run(ctx, SyncRequest(fs=src))
    assert res.expired == [f"{src}@zrep_000001", f"{dst}@zrep_000001"]
    on_a = [argv[1] for argv in a.zfs.zfs_calls()[na:]]
    on_b = [argv[1:] for argv in b.zfs.zfs_calls()[nb:]]
    assert len(on_a) == 9 and on_a.count("destroy") == 2, on_a  # the cursor's and the expire's
    expected = ["get", "recv", "set", "hold", "release", "destroy"]
    assert sorted(c[0] for c in on_b) == sorted(expected), on_b
    assert ["destroy", "-r", f"{dst}@zrep_000001"] in on_b
    assert snaps(a, src) == snaps(b, dst) == ["zrep_000002", "zrep_000003"]
    assert holds(b, f"{dst}@zrep_000003") == ["zrepq:zrep:lastsent"]


def test_a_forced_sync_reads_the_standby_again_for_its_expire(
    pair: tuple[Fleet, Site, Site],
) -> None:
    """`recv -F` may destroy snapshots the sync listed on the standby at its start: here a
    zrep-named one made on the standby (a diverged history, hence the force). Counting it
    would make the expire destroy one snapshot too many there (savecount 2: zrep_000001 and
    zrep_000002 stay). The sync's lists are not reused then: the standby is read again."""
    f, a, b = pair
    init(f, a, b, ZREP_SAVE_COUNT="2")
    src, dst = a.fs("prod"), b.fs("prod")
    ctx = f.context("hosta")
    run(ctx, SyncRequest(fs=src))
    b.zfs.zfs("snapshot", f"{dst}@zrep_000009")
    with pytest.raises(Conflict, match="diverged"):
        run(ctx, SyncRequest(fs=src))
    nb = len(b.zfs.zfs_calls())
    res = run(ctx, SyncRequest(fs=src, force=True))
    assert res.status == "synced" and res.snapshot == f"{src}@zrep_000002"
    assert snaps(b, dst) == ["zrep_000001", "zrep_000002"]
    assert snaps(a, src) == ["zrep_000001", "zrep_000002"]
    assert res.expired == [f"{src}@zrep_000000", f"{dst}@zrep_000000"]
    on_b = [argv[1] for argv in b.zfs.zfs_calls()[nb:]]
    assert on_b.count("get") == 2, on_b  # the start, and the expire's fresh read


def test_the_standbys_writes_of_a_sync_go_in_one_remote_command(
    pair: tuple[Fleet, Site, Site], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the stream, the standby's mark, hold and release run as one remote script
    (`ZfsHost.batch`): with the expire's destroy, 3 remote commands on the standby per sync
    (its read, the batch, the destroy) where there were 6 (5 after the expire stopped
    reading it again), besides the stream. The zfs calls stay the same."""
    f, a, b = pair
    src, dst, ctx = _at_savecount_2(f, a, b)
    opened: list[tuple[str, tuple[str, ...]]] = []
    real = ParamikoRunner._open_channel

    def counting(self: ParamikoRunner, argv: tuple[str, ...], command: str) -> object:
        opened.append((self.host, argv))
        return real(self, argv, command)

    monkeypatch.setattr(ParamikoRunner, "_open_channel", counting)
    nb = len(b.zfs.zfs_calls())
    res = run(ctx, SyncRequest(fs=src))
    assert res.expired == [f"{src}@zrep_000001", f"{dst}@zrep_000001"]
    assert [host for host, _ in opened] == ["hostb"] * 3, opened
    batch = opened[1][1]
    assert batch[0] == "batch" and [c.split()[:2] for c in batch[1].split("; ")] == [
        ["zfs", "set"],
        ["zfs", "hold"],
        ["zfs", "release"],
    ]
    assert len(b.zfs.zfs_calls()) - nb == 6
    assert prop(b, "zrep:sent", f"{dst}@zrep_000003", "source") == "local"
    assert holds(b, f"{dst}@zrep_000003") == ["zrepq:zrep:lastsent"]
    assert holds(b, f"{dst}@zrep_000002") == []
    assert snaps(b, dst) == ["zrep_000002", "zrep_000003"]


def test_a_failed_write_in_a_batch_raises_the_verbs_own_error_and_stops_it(
    pair: tuple[Fleet, Site, Site],
) -> None:
    """A batch judges each command as its verb does: a hold that failed raises the same typed
    error, naming the same command, as `ZfsHost.hold`, and the release after it never runs
    (our hold stays where it was); a hold that was already there is fine, and the rest runs."""
    f, a, b = pair
    init(f, a, b)
    dst = b.fs("prod")
    zh = f.context("hosta").zfs("hostb")
    tag = "zrepq:zrep:lastsent"
    old, gone = f"{dst}@zrep_000000", f"{dst}@nosuch"
    assert holds(b, old) == [tag]
    with pytest.raises(CommandError) as single:
        zh.hold(tag, gone)
    with pytest.raises(CommandError) as batched:
        zh.batch().set(old, {"zrep:x": "1"}).hold(tag, gone).release(tag, old).run()
    assert type(batched.value) is type(single.value)
    assert str(batched.value) == str(single.value) and batched.value.argv == single.value.argv
    assert batched.value.host == "hostb" and "zfs hold" in " ".join(batched.value.argv)
    assert prop(b, "zrep:x", old) == "1"  # ran before the failure
    assert holds(b, old) == [tag]  # the release after it did not run
    zh.batch().hold(tag, old).set(old, {"zrep:x": "2"}).release(tag, old).run()
    assert prop(b, "zrep:x", old) == "2" and holds(b, old) == []


def test_stale_holds_cost_no_extra_zfs_call(pair: tuple[Fleet, Site, Site]) -> None:
    """Holds left on older snapshots (zrep synced in between, or an older zrepq) are all
    released by the same single `zfs release` per side that a plain sync makes: the snapshots
    with a hold are known from `userrefs` in the reads the sync makes anyway."""
    f, a, b = pair
    init(f, a, b)
    ctx = f.context("hosta")
    src, dst = a.fs("prod"), b.fs("prod")
    for _ in range(3):
        run(ctx, SyncRequest(fs=src))
    for site, fs in ((a, src), (b, dst)):
        for n in (0, 1):
            site.zfs.zfs("hold", "zrepq:zrep:lastsent", f"{fs}@zrep_{n:06x}")
    na, nb = len(a.zfs.zfs_calls()), len(b.zfs.zfs_calls())
    run(ctx, SyncRequest(fs=src))
    on_a = [argv[1:] for argv in a.zfs.zfs_calls()[na:]]
    on_b = [argv[1:] for argv in b.zfs.zfs_calls()[nb:]]
    # 8 on the master: the source read once, under the lease, no lock marks (no zrep here),
    # and the cursor's two; 5 on the standby, read once (see the tests above)
    assert len(on_a) == 8 and len(on_b) == 5, (on_a, on_b)
    assert [c for c in on_a if c[0] == "release"] == [
        ["release", "zrepq:zrep:lastsent", *(f"{src}@zrep_{n:06x}" for n in (0, 1, 3))]
    ]
    assert [c for c in on_b if c[0] == "release"] == [
        ["release", "zrepq:zrep:lastsent", *(f"{dst}@zrep_{n:06x}" for n in (0, 1, 3))]
    ]
    for site, fs in ((a, src), (b, dst)):
        assert [holds(site, f"{fs}@zrep_{n:06x}") for n in range(5)] == [
            [],
            [],
            [],
            [],
            ["zrepq:zrep:lastsent"],
        ]
