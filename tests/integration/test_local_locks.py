"""`zrepq-local` without Redis locks like zrep, with real processes (issue 12, point 3).

Each test runs `zrepq-local` as a real subprocess on hosta (stand-in zfs, hostb behind a real
sshd), next to a real process holding the lock: another `zrepq-local`, a fake upstream zrep
(tests/harness/fake-zrep: zrep 2.0.2's lock steps, installed under a path that contains
"zrepq"), a process that reuses a dead holder's pid, an engine holding a Redis lease as a
worker does. The session's lock directories come from tests/conftest.py.

zrep's lock marks (`zrep:lock-pid`) are set only where an upstream zrep is installed
(`lock_marks = auto`, `workers.engine.zreplock.marks_wanted`): the tests about zrep put the
fake zrep on `zrepq-local`'s PATH (`with_zrep`), as an admin's install would; the others run
on a host without zrep, where zrepq processes exclude each other with lock files alone.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.harness.fleet import Fleet, Site
from tests.harness.netutil import REPO, wait_until
from tests.harness.pids import FAKE_ZREP, GATED_CAT, kill_group, spawn_with_pid
from workers.engine import run, steps
from workers.engine.errors import ConfigError, LockHeld
from workers.engine.requests import InitRequest, SyncRequest
from workers.filelock import FileLocks, LeaseAndFile, lock_file_name
from workers.lease import RedisLocks

LOCAL = [sys.executable, "-c", "from workers.cli import run; run()"]
MARKS = {"ZREPQ_LOCK_MARKS": "always"}  # zrep's marks whether or not zrep is installed
# Seconds a step (a whole `zrepq-local` run, a holder reaching `zfs send`) may take: each
# stand-in zfs call is a Python process, seconds apiece at a load of 30; a wait ends as soon
# as its condition holds, so a quiet machine does not wait longer.
PATIENCE = 120


def held_until(gate: Path) -> str:
    """A ZREP_INFILTER that holds a sync mid-stream until the test creates `gate`: the holder
    runs for as long as the test needs it, on a quiet machine or at a load of 30 (a rate limit,
    `pv -L`, let it end after ~3 s, sometimes before the contender had started). `streaming`
    tells when the sync has got there."""
    return shlex.join([str(GATED_CAT), str(gate)])


def streaming(gate: Path) -> bool:
    """Has the sync held by `held_until(gate)` reached its stream (its locks taken)?"""
    return gate.with_name(gate.name + ".reached").exists()


def prop(site: Site, name: str, ds: str) -> str:
    return site.zfs.zfs("get", "-H", "-o", "value", name, ds).stdout.strip()


def snaps(site: Site, fs: str) -> list[str]:
    out = site.zfs.zfs("list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", fs).stdout
    return [line.split("@", 1)[1] for line in out.splitlines() if line]


def local_env(site: Site, **extra: str) -> dict[str, str]:
    """`zrepq-local`'s environment on `site`, as cron would give it: no Redis anywhere."""
    env = {
        **site.zfs.env,
        "PYTHONPATH": str(REPO),
        "ZREPQ_CONFIG": "none",
        "ZREP_SRC_HOST": site.name,
        "ZREPQ_SSH_CONFIG": str(site.sshd.config_file),
    }
    env.pop("ZREPQ_BROKER_URL", None)
    env.update(extra)
    return env


def zrepq_local(
    site: Site, *args: str, zrep: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = local_env(site, **extra)
    return subprocess.run(
        [*LOCAL, *args],
        env=with_zrep(env, zrep) if zrep else env,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )


def with_zrep(env: dict[str, str], zrep: Path) -> dict[str, str]:
    """`env` with zrep's directory first on PATH: zrep is installed on this host."""
    return {**env, "PATH": f"{zrep.parent}:{env.get('PATH', os.environ['PATH'])}"}


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )


@pytest.fixture
def pair(fleet: Callable[..., Fleet]) -> tuple[Fleet, Site, Site]:
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    a.zfs.zfs("create", a.fs("prod"))
    a.zfs.write(a.fs("prod"), "hello.txt", b"hello\n")
    run(f.context("hosta"), InitRequest(fs=a.fs("prod"), dest_host="hostb", dest_fs=b.fs("prod")))
    return f, a, b


@pytest.fixture
def fake_zrep(tmp_path: Path) -> Path:
    """Upstream zrep's lock steps, installed where the old name test ignored them."""
    where = tmp_path / "opt" / "zrepq-tools" / "bin" / "zrep"
    where.parent.mkdir(parents=True)
    shutil.copy(FAKE_ZREP, where)
    return where


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            kill_group(p)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_two_overlapping_zrepq_local_syncs_the_second_refuses(
    pair: tuple[Fleet, Site, Site], cleanup: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    _f, a, b = pair
    src = a.fs("prod")
    a.zfs.write(src, "big.bin", os.urandom(3_000_000))
    gate = tmp_path / "gate"
    first = start([*LOCAL, "sync", src], local_env(a, ZREP_INFILTER=held_until(gate)))
    cleanup.append(first)
    assert wait_until(lambda: streaming(gate), PATIENCE), first.stderr and first.stderr.read()
    # No zrep installed here: no zrep lock marks, the lock file alone excludes.
    assert prop(a, "zrep:lock-pid", src) == "-"

    # Refused at once: a second run that waited for the lock would wait for the gate, forever
    # (`zrepq_local`'s timeout).
    second = zrepq_local(a, "sync", src)
    assert second.returncode == 1, second
    lines = _error_lines(second.stderr)
    assert lines[0] == f"Error: Cannot lock {src}. Cannot continue"  # zrep's own line
    assert lines[1].startswith(f"hosta:zrep:{src} is locked by pid {first.pid} on hosta (sync)")
    assert " since " in lines[1] and lock_file_name(f"hosta:zrep:{src}") in lines[1]
    assert first.poll() is None  # untouched: still sending

    gate.touch()
    _, err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 0, err
    # Exactly one new snapshot, on both sides; the lock is gone with the run.
    assert snaps(a, src) == snaps(b, b.fs("prod")) == ["zrep_000000", "zrep_000001"]
    assert prop(a, "zrep:lock-pid", src) == "-" and prop(a, "zrep:lock-time", src) == "-"
    assert b.zfs.tree(b.fs("prod")) == a.zfs.tree(src)


def test_a_live_zrep_under_a_zrepq_path_is_respected_both_ways(
    pair: tuple[Fleet, Site, Site],
    fake_zrep: Path,
    cleanup: list[subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    _f, a, _b = pair
    src = a.fs("prod")
    zrep_done, mine_done = tmp_path / "zrep-done", tmp_path / "mine-done"
    zrep = start(["bash", str(fake_zrep), "sync", src], local_env(a, UNTIL=str(zrep_done)))
    cleanup.append(zrep)
    assert zrep.stdout is not None and zrep.stdout.readline().strip() == f"locked {src}"
    res = zrepq_local(a, "sync", src)
    assert res.returncode == 1, res
    lines = _error_lines(res.stderr)
    assert lines[0] == f"Error: Cannot lock {src}. Cannot continue"
    assert lines[1].startswith(f"{src} is locked by pid {zrep.pid} (bash {fake_zrep} sync {src})")
    assert " since " in lines[1] and lines[1].endswith("(zrep:lock-pid)")
    assert prop(a, "zrep:lock-pid", src) == str(zrep.pid)  # not ours to clear
    assert snaps(a, src) == ["zrep_000000"]
    zrep_done.touch()
    assert zrep.wait(PATIENCE) == 0  # zrep unlocks itself...
    res = zrepq_local(a, "sync", src, zrep=fake_zrep)  # ... and then zrepq-local runs
    assert res.returncode == 0, res.stderr
    assert snaps(a, src) == ["zrep_000000", "zrep_000001"]

    # The other way: zrep refuses a filesystem that a running zrepq-local holds; zrep being
    # installed here (on zrepq-local's PATH), zrepq-local sets zrep's marks.
    a.zfs.write(src, "big.bin", os.urandom(3_000_000))
    mine_env = with_zrep(local_env(a, ZREP_INFILTER=held_until(mine_done)), fake_zrep)
    mine = start([*LOCAL, "sync", src], mine_env)
    cleanup.append(mine)
    assert wait_until(lambda: streaming(mine_done), PATIENCE)
    assert prop(a, "zrep:lock-pid", src) == str(mine.pid)
    theirs = subprocess.run(
        ["bash", str(fake_zrep), "sync", src], env=local_env(a), capture_output=True, text=True
    )
    assert theirs.returncode == 1 and "Cannot lock" in theirs.stderr
    mine_done.touch()
    assert mine.wait(PATIENCE) == 0
    assert prop(a, "zrep:lock-pid", src) == "-"  # cleared at the end


def test_a_dead_or_reused_lock_pid_is_overridden(
    pair: tuple[Fleet, Site, Site], fake_zrep: Path, cleanup: list[subprocess.Popen[str]]
) -> None:
    _f, a, _b = pair
    src = a.fs("prod")
    # A zrep that locked a minute ago and was killed: its lock-pid names a dead process.
    minute_ago = time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() - 60))
    zrep = start(["bash", str(fake_zrep), "sync", src], local_env(a, LOCK_TIME=minute_ago))
    cleanup.append(zrep)
    assert zrep.stdout is not None and zrep.stdout.readline().strip() == f"locked {src}"
    dead = zrep.pid
    kill_group(zrep)
    assert prop(a, "zrep:lock-pid", src) == str(dead)
    # Its pid is given to a new process (really: ns_last_pid), started after the lock was set.
    reuser = spawn_with_pid(dead, ["sleep", "60"])
    try:
        assert reuser.pid == dead and reuser.poll() is None
        res = zrepq_local(a, "sync", src, zrep=fake_zrep)
        assert res.returncode == 0, res.stderr
        assert snaps(a, src) == ["zrep_000000", "zrep_000001"]
        assert prop(a, "zrep:lock-pid", src) == "-"  # taken over, then released
        assert reuser.poll() is None  # nothing was done to the process that has the pid now
    finally:
        reuser.kill()
        reuser.wait()
    # And with the pid gone altogether.
    a.zfs.zfs("set", f"zrep:lock-pid={dead}", f"zrep:lock-time={minute_ago}", src)
    res = zrepq_local(a, "sync", src, zrep=fake_zrep)
    assert res.returncode == 0, res.stderr
    assert prop(a, "zrep:lock-pid", src) == "-"
    # Without zrep on the host, a stale mark is ignored, not cleared (that would cost a call).
    a.zfs.zfs("set", f"zrep:lock-pid={dead}", f"zrep:lock-time={minute_ago}", src)
    res = zrepq_local(a, "sync", src)
    assert res.returncode == 0, res.stderr
    assert prop(a, "zrep:lock-pid", src) == str(dead)
    assert "ignoring stale zrep:lock-pid" in res.stderr


def test_zreps_global_lock_is_waited_for_and_a_stale_one_removed(
    pair: tuple[Fleet, Site, Site], fake_zrep: Path, cleanup: list[subprocess.Popen[str]]
) -> None:
    """With zrep installed (its marks are set under its global lock); without, zrepq sets no
    mark and leaves zrep's global lock alone."""
    _f, a, _b = pair
    src = a.fs("prod")
    glock = Path(os.environ["ZREP_RUNDIR"]) / "zrep.lock"
    # A live zrep holds its global lock for a moment (1.5 s): zrepq waits, then runs.
    holder = start(["sleep", "30"], local_env(a))
    cleanup.append(holder)
    glock.write_text(f"{holder.pid}\n")
    # No zrep here: no mark to set, so zrep's global lock is neither waited for nor touched.
    res = zrepq_local(a, "sync", src)
    assert res.returncode == 0, res.stderr
    assert glock.read_text() == f"{holder.pid}\n"
    # zrep installed: it is waited for.
    threading.Timer(1.5, glock.unlink).start()
    t0 = time.monotonic()
    res = zrepq_local(a, "sync", src, zrep=fake_zrep)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 >= 1.4
    assert not glock.exists()
    # A global lock left by a process killed while holding it is removed, not waited on.
    dead = subprocess.Popen(["true"])
    dead.wait()
    glock.write_text(f"{dead.pid}\n")
    t0 = time.monotonic()
    res = zrepq_local(a, "sync", src, zrep=fake_zrep)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 8
    assert not glock.exists()
    assert "removed zrep's stale global lock" in res.stderr
    assert snaps(a, src) == ["zrep_000000", "zrep_000001", "zrep_000002", "zrep_000003"]


def test_a_lease_alone_honours_a_live_zrepq_local_through_zreps_marks(
    pair: tuple[Fleet, Site, Site],
    fake_zrep: Path,
    redis_client: redis.Redis,
    cleanup: list[subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    """An engine holding a Redis lease alone (which zrepq-local does not see) and zrepq-local
    on one host exclude each other through zrep's lock-pid, set for want of zrepq-local's lock
    file (`LeaseHandle.host_excluded`): zrepq-local, here with zrep installed, sets it too.
    A worker takes the lock file as well: the next test."""
    f, a, _b = pair
    src = a.fs("prod")
    a.zfs.write(src, "big.bin", os.urandom(3_000_000))
    gate = tmp_path / "gate"
    mine = start(
        [*LOCAL, "sync", src], with_zrep(local_env(a, ZREP_INFILTER=held_until(gate)), fake_zrep)
    )
    cleanup.append(mine)
    assert wait_until(lambda: streaming(gate), PATIENCE)
    worker_like = f.context("hosta", locks=RedisLocks(redis_client, owner="hosta"))
    with pytest.raises(LockHeld) as info:
        run(worker_like, SyncRequest(fs=src))
    first, detail = info.value.message.split("\n")
    assert first == f"Cannot lock {src}. Cannot continue"
    assert detail.startswith(f"{src} is locked by pid {mine.pid} (") and "workers.cli" in detail
    gate.touch()
    assert mine.wait(PATIENCE) == 0
    assert run(worker_like, SyncRequest(fs=src)).status == "synced"
    assert prop(a, "zrep:lock-pid", src) == "-"


def test_a_worker_that_cannot_use_the_lock_directory_sets_zreps_marks_instead(
    pair: tuple[Fleet, Site, Site],
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's locks (`LeaseAndFile`) with a lock directory it may not use (here: one
    others may write): the sync runs, with zrep's marks set and cleared in place of the lock
    file (no zrep installed here), and a warning says so, once per process."""
    f, a, _b = pair
    src = a.fs("prod")
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    locks = LeaseAndFile(RedisLocks(redis_client, owner="hosta"), FileLocks(loose))
    for _ in range(2):
        n = len(a.zfs.zfs_calls())
        assert run(f.context("hosta", locks=locks), SyncRequest(fs=src)).status == "synced"
        calls = [argv[1:] for argv in a.zfs.zfs_calls()[n:]]
        assert ["inherit", "zrep:lock-pid", src] in calls
        assert any(c[0] == "set" and f"zrep:lock-pid={os.getpid()}" in c for c in calls)
    assert prop(a, "zrep:lock-pid", src) == "-"
    warned = [
        r.getMessage() for r in caplog.records if "excluded by zrep's lock marks" in r.getMessage()
    ]
    assert len(warned) == 1 and "writable by others" in warned[0], warned
    # With a directory it can use: the lock file, no marks.
    good = LeaseAndFile(RedisLocks(redis_client, owner="hosta"), FileLocks(tmp_path / "locks"))
    n = len(a.zfs.zfs_calls())
    assert run(f.context("hosta", locks=good), SyncRequest(fs=src)).status == "synced"
    writes = [argv for argv in a.zfs.zfs_calls()[n:] if argv[1] in ("set", "inherit")]
    assert writes and not any("zrep:lock-pid" in " ".join(argv) for argv in writes), writes


def test_this_process_tells_its_own_stale_mark_from_a_live_one(
    pair: tuple[Fleet, Site, Site],
) -> None:
    f, a, _b = pair
    src = a.fs("prod")
    now = time.strftime("%Y%m%d%H%M%S")
    # Our own pid, but no operation of ours holds the dataset: a mark we failed to clear.
    a.zfs.zfs("set", f"zrep:lock-pid={os.getpid()}", f"zrep:lock-time={now}", src)
    assert run(f.context("hosta", MARKS), SyncRequest(fs=src)).status == "synced"
    assert prop(a, "zrep:lock-pid", src) == "-"
    # Two engines of one process with separate primary locks: the mark still excludes.
    ctx = f.context("hosta", MARKS)
    info = ctx.local.require(src)
    with (
        steps.lock(ctx, [("hosta", src)], "sync", local_info=info),
        pytest.raises(LockHeld, match="locked by this process"),
    ):
        run(f.context("hosta", MARKS), SyncRequest(fs=src))
    assert prop(a, "zrep:lock-pid", src) == "-"


def test_file_locks_exclude_name_their_holder_and_refuse_unsafe_places(tmp_path: Path) -> None:
    locks = FileLocks(tmp_path / "locks", owner="hosta")
    name = "zrep:hosta:pool/a b"
    with locks.hold([name, "zrep:hostb:pool/x"], operation="failover") as h:
        assert (tmp_path / "locks").stat().st_mode & 0o777 == 0o700
        f = tmp_path / "locks" / lock_file_name(name)
        assert f.stat().st_mode & 0o777 == 0o600
        assert locks.holder(name) == h.token
        # Another process cannot take it: a real child process tries.
        code = subprocess.run(
            [sys.executable, "-c", _TRY, str(tmp_path / "locks"), name],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
        )
        assert code.returncode == 3, code.stderr
        assert f"is locked by pid {os.getpid()} on hosta (failover) since" in code.stdout
        # Not even this process, from another thread's hold (flock is per open file).
        with pytest.raises(LockHeld), locks.hold([name], operation="sync"):
            pass
        t0 = time.monotonic()
        with pytest.raises(LockHeld, match=r"waited 1s"), locks.hold([name], operation="s", wait=1):
            pass
        assert time.monotonic() - t0 >= 0.9
    assert locks.holder(name) is None and f.read_text() == ""  # free: an empty file
    # A holder that dies frees the lock, whatever killed it.
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "locks"), name],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    assert locks.holder(name) is not None
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with locks.hold([name], operation="sync"):
        pass
    # Unsafe places are refused: a directory others may write, a symlink for a lock file.
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    with (
        pytest.raises(ConfigError, match="writable by others"),
        FileLocks(loose).hold(["k"], operation="x"),
    ):
        pass
    (tmp_path / "locks" / lock_file_name("k")).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="lock file"), locks.hold(["k"], operation="x"):
        pass
    assert not (tmp_path / "elsewhere").exists()


_TRY = """
import sys
from workers.engine.errors import LockHeld
from workers.filelock import FileLocks
try:
    with FileLocks(sys.argv[1], owner="other").hold([sys.argv[2]], operation="sync"):
        sys.exit(0)
except LockHeld as e:
    print(e)
    sys.exit(3)
"""

_HOLD = """
import sys, time
from workers.filelock import FileLocks
with FileLocks(sys.argv[1], owner="other").hold([sys.argv[2]], operation="sync"):
    print("held", flush=True)
    time.sleep(60)
"""
