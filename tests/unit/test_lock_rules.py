"""The pure parts of locking: lock tokens, /proc parsing, the liveness rules, lock file names.

The rules run here against a made-up /proc (a directory with `stat`, `sys/kernel/random/
boot_id`, `self/ns/pid` and `PID/stat` files), so each case is exact; tests/integration/
test_local_locks.py and test_lease_takeover.py apply them to real processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.engine import liveness
from workers.engine.config import EngineConfig
from workers.engine.errors import ConfigError, LockHeld
from workers.engine.liveness import ProcessIdentity, lock_pid_holder, lock_time_epoch, parse_stat
from workers.engine.locks import LockToken, describe_holder
from workers.engine.names import validate_dataset
from workers.engine.zreplock import GlobalLock, marks_wanted, zrep_program
from workers.filelock import lock_file_name
from workers.settings import load

NO_SUCH_PID = 99_999_999  # above any pid_max: `kill -0` says no such process
BOOT = "5c1d1f2e-0000-4000-8000-000000000001"
TCK = os.sysconf("SC_CLK_TCK")


def _stat_line(pid: int, comm: str, state: str, start: int) -> str:
    # pid (comm) state, then fields 4..52; field 22 (starttime) is the 20th after the comm.
    rest = ["0"] * 49
    rest[0] = state
    rest[19] = str(start)
    return f"{pid} ({comm}) {' '.join(rest)}\n"


class FakeProc:
    """A /proc with a boot time, a boot id, a pid namespace, and the processes we put in."""

    def __init__(self, root: Path, btime: int, boot: str = BOOT, ns: str = "4026531836"):
        self.root = root
        (root / "sys/kernel/random").mkdir(parents=True)
        (root / "sys/kernel/random/boot_id").write_text(boot + "\n")
        (root / "self/ns").mkdir(parents=True)
        os.symlink(f"pid:[{ns}]", root / "self/ns/pid")
        (root / "stat").write_text(f"cpu  1 2 3\nbtime {btime}\nprocesses 9\n")
        self.btime = btime

    def add(self, pid: int, started: float, state: str = "S", comm: str = "zrep") -> int:
        """A process `pid` started at epoch `started`; returns its start in ticks."""
        ticks = round((started - self.btime) * TCK)
        (self.root / str(pid)).mkdir()
        (self.root / str(pid) / "stat").write_text(_stat_line(pid, comm, state, ticks))
        (self.root / str(pid) / "cmdline").write_bytes(b"/opt/zrepq-tools/bin/zrep\0sync\0")
        return ticks


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[FakeProc]:
    liveness.boot_id.cache_clear()
    liveness.pid_namespace.cache_clear()
    yield FakeProc(tmp_path / "proc", btime=int(time.time()) - 86_400)
    liveness.boot_id.cache_clear()
    liveness.pid_namespace.cache_clear()


def _lock_time(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(epoch))


# ---- tokens ------------------------------------------------------------------------------


def test_a_token_round_trips_and_an_old_one_still_parses() -> None:
    ident = ProcessIdentity(BOOT, "4026531836", 123456)
    tok = LockToken("hosta", 16680, "sync/0b1f:x", "abc123", ident, 1_700_000_000)
    text = str(tok)
    assert text == (
        f"hosta:16680:sync/0b1f:x:abc123:boot={BOOT}:pidns=4026531836:start=123456:since=1700000000"
    )
    assert LockToken.parse(text) == tok
    old = LockToken.parse("hosta:16680:sync/0b1f-task:9f3e")  # written before identities
    assert old == LockToken("hosta", 16680, "sync/0b1f-task", "9f3e")
    assert old.process is None and not old.gone("hosta")  # nothing provable without it
    for foreign in ("", "hosta", "hosta:pid:sync:x", "a:1:b", "12345"):
        assert LockToken.parse(foreign) is None
    assert describe_holder("not a token") == "not a token"
    words = describe_holder(text)
    assert words.startswith("pid 16680 on hosta (sync/0b1f:x) since ")
    assert time.strftime("%Y-%m-%d", time.localtime(1_700_000_000)) in words


def test_a_new_token_names_this_process() -> None:
    tok = LockToken.parse(str(LockToken.new("hosta", "sync")))
    assert tok is not None and tok.pid == os.getpid() and tok.owner == "hosta"
    assert tok.process == liveness.current_identity()
    assert tok.since is not None and abs(tok.since - time.time()) < 5
    assert not tok.gone("hosta")  # this process runs


# ---- /proc parsing and the token rule ------------------------------------------------------


def test_stat_is_parsed_from_the_last_parenthesis() -> None:
    s = parse_stat(_stat_line(42, "evil) R 1 (name", "S", 777))
    assert (s.pid, s.comm, s.state, s.start_ticks) == (42, "evil) R 1 (name", "S", 777)
    assert parse_stat(_stat_line(7, "zombie", "Z", 1)).exited
    with pytest.raises(ValueError):
        parse_stat("42 no parenthesis here")


def test_a_token_holder_is_gone_only_when_provably_ended(proc: FakeProc) -> None:
    now = time.time()
    start = proc.add(300, now - 60)
    ns = "4026531836"
    same = ProcessIdentity(BOOT, ns, start)
    assert liveness.gone(300, same, proc.root) is False  # it runs
    assert liveness.gone(300, ProcessIdentity(BOOT, ns, start - 5), proc.root) is True  # reused
    assert liveness.gone(NO_SUCH_PID, same, proc.root) is True  # absent
    proc.add(301, now - 60, state="Z")
    assert liveness.gone(301, ProcessIdentity(BOOT, ns, start), proc.root) is True  # zombie
    other_boot = ProcessIdentity("another-boot", ns, start)
    assert liveness.gone(NO_SUCH_PID, other_boot, proc.root) is None  # cannot tell
    assert liveness.gone(NO_SUCH_PID, ProcessIdentity(BOOT, "999", start), proc.root) is None


# ---- zrep's lock-pid rule ------------------------------------------------------------------


def test_lock_pid_rule_live_gone_reused(proc: FakeProc) -> None:
    now = time.time()
    locked_at = _lock_time(now - 600)  # a zrep locked ten minutes ago
    proc.add(400, now - 700)  # ... and has run since before that: the holder
    live = lock_pid_holder(400, locked_at, proc=proc.root)
    assert live.live and "/opt/zrepq-tools/bin/zrep sync" in live.command  # whatever its name
    proc.add(401, now - 60)  # started after the lock was written: a reused pid
    assert lock_pid_holder(401, locked_at, proc=proc.root).state == "reused"
    assert lock_pid_holder(NO_SUCH_PID, locked_at, proc=proc.root).state == "gone"
    proc.add(402, now - 700, state="Z")
    assert lock_pid_holder(402, locked_at, proc=proc.root).state == "gone"
    # Without a readable lock-time, existence decides (zrep's `kill -0`).
    for bad in (None, "", "yesterday", "2024130199999"):
        assert lock_pid_holder(401, bad, proc=proc.root).live
    # lock-time has whole seconds: a holder that started in the same second still holds.
    proc.add(403, now - 599.5)
    assert lock_pid_holder(403, locked_at, proc=proc.root).live


def test_lock_time_is_local_time_and_the_repeated_hour_reads_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert lock_time_epoch(_lock_time(1_700_000_000)) == 1_700_000_000
    assert lock_time_epoch("20241301000000") is None
    assert lock_time_epoch("2024-11-03 01:30") is None
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        # 2024-11-03 01:30 happened twice (EDT, then EST an hour later): the later one.
        assert lock_time_epoch("20241103013000") == 1730615400  # 06:30 UTC
        assert lock_time_epoch("20240701120000") == 1719849600  # 16:00 UTC, plain EDT
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# ---- lock file names -----------------------------------------------------------------------

_CHARS = "abcXYZ019_-.: "
_component = st.text(alphabet=_CHARS, min_size=1, max_size=40).filter(
    lambda c: c.strip() == c and c not in (".", "..")
)
_dataset = st.builds(
    lambda pool, rest: "/".join(["p" + pool, *rest]),
    st.text(alphabet=_CHARS, max_size=10).filter(lambda c: c.strip() == c),
    st.lists(_component, max_size=6),
).filter(lambda n: len(n) <= 255)


@settings(max_examples=300, deadline=None)
@given(st.lists(_dataset, min_size=2, max_size=8, unique=True))
def test_every_dataset_name_maps_to_its_own_safe_file(names: list[str]) -> None:
    files = set()
    for name in names:
        validate_dataset(name)
        f = lock_file_name(f"zrep:hosta:{name}")
        assert "/" not in f and f not in (".", "..") and not f.startswith(".")
        assert len(f.encode()) <= 255 and f.endswith(".lock")
        files.add(f)
    assert len(files) == len(names)


def test_long_and_tricky_names_get_distinct_files() -> None:
    long_a = "pool/" + "/".join([": x" * 16] * 5)  # every ':' and ' ' escaped: 3x longer
    long_b = long_a[:-1] + "y"
    assert len(long_a) <= 255
    validate_dataset(long_a)
    fa, fb = lock_file_name(f"zrep:h:{long_a}"), lock_file_name(f"zrep:h:{long_b}")
    assert fa != fb and "+" in fa and len(fa) <= 255
    # The escape character and the separators are escaped too: no two names meet.
    assert lock_file_name("zrep:h:p/a%2Fb") != lock_file_name("zrep:h:p/a/b")
    assert lock_file_name("zrep:h:p/a b") == "zrep%3Ah%3Ap%2Fa%20b.lock"
    assert lock_file_name("zrep:h:p/A") != lock_file_name("zrep:h:p/a")


# ---- settings --------------------------------------------------------------------------------


def test_lock_settings_are_validated_and_the_old_redis_url_is_refused(tmp_path: Path) -> None:
    base = {"ZREPQ_CONFIG": "none"}
    s = load(base)
    assert str(s.model.locks.dir) == "/run/zrepq/locks" and s.model.locks.redis is False
    s = load({**base, "ZREPQ_LOCK_DIR": str(tmp_path), "ZREPQ_LOCK_REDIS": "yes"})
    assert s.model.locks.dir == tmp_path and s.model.locks.redis is True
    with pytest.raises(ConfigError, match=r"ZREPQ_LOCK_DIR: .*absolute path"):
        load({**base, "ZREPQ_LOCK_DIR": "run/locks"})
    with pytest.raises(ConfigError, match=r"ZREPQ_REDIS_URL: no longer read.*\[locks\] redis"):
        load({**base, "ZREPQ_REDIS_URL": "redis://127.0.0.1:6379/0"})
    cfg = tmp_path / "zrepq.toml"
    cfg.write_text('[locks]\ndir = "/srv/locks"\nredis = true\n[zrep]\nrundir = "/srv/run"\n')
    s = load({"ZREPQ_CONFIG": str(cfg)})
    assert str(s.model.locks.dir) == "/srv/locks" and s.model.locks.redis is True
    assert s.engine_config().rundir == "/srv/run"
    assert EngineConfig.from_env({}).rundir == ("/var/run" if os.geteuid() == 0 else "/tmp")
    with pytest.raises(ConfigError, match="ZREP_RUNDIR must be an absolute path"):
        EngineConfig.from_env({"ZREP_RUNDIR": "var/run"})


# ---- zrep's global lock ------------------------------------------------------------------------


def test_zreps_global_lock_file(tmp_path: Path) -> None:
    glock = GlobalLock(tmp_path, wait=0.3)
    with glock.held():
        assert glock.path.read_text() == f"{os.getpid()}\n"  # as zrep writes it
        assert glock.path.stat().st_mode & 0o777 == 0o644
    assert not glock.path.exists()
    # Held by a live process (this test's parent, started long before the file): wait, refuse.
    glock.path.write_text(f"{os.getppid()}\n")
    t0 = time.monotonic()
    with (
        pytest.raises(LockHeld, match=rf"held by pid {os.getppid()} \(waited 0.3s\)"),
        glock.held(),
    ):
        pass
    assert time.monotonic() - t0 >= 0.3 and glock.path.exists()
    # Left by a process that is gone: removed, then taken.
    glock.path.write_text(f"{NO_SUCH_PID}\n")
    with glock.held():
        assert glock.path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(ConfigError, match="does not exist"), GlobalLock(tmp_path / "no").held():
        pass


def test_zrep_is_found_on_path_and_in_the_usual_places_only_as_an_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, opt = tmp_path / "bin", tmp_path / "opt"
    bin_dir.mkdir()
    (opt / "zrep-2.0.2" / "bin").mkdir(parents=True)
    places = (str(opt / "*" / "bin"),)
    assert zrep_program(str(bin_dir), places) is None
    (opt / "zrep-2.0.2" / "bin" / "zrep").write_text("#!/bin/sh\n")
    assert zrep_program(str(bin_dir), places) is None  # not executable: not a program
    (opt / "zrep-2.0.2" / "bin" / "zrep").chmod(0o755)
    assert zrep_program(str(bin_dir), places) == str(opt / "zrep-2.0.2" / "bin" / "zrep")
    (bin_dir / "zrep").write_text("#!/bin/sh\n")
    (bin_dir / "zrep").chmod(0o755)
    assert zrep_program(f"relative:{bin_dir}", places) == str(bin_dir / "zrep")  # PATH first
    monkeypatch.chdir(bin_dir)
    assert zrep_program(".:bin", ()) is None  # relative PATH entries are skipped
    # The setting: auto follows what is installed (this process's PATH), the others do not.
    monkeypatch.setenv("PATH", str(bin_dir))
    assert marks_wanted("always") and not marks_wanted("never") and marks_wanted("auto")
    (bin_dir / "zrep").unlink()  # uninstalled: seen at the next command, no cache
    installed_elsewhere = zrep_program() is not None  # in the usual places of this machine
    assert marks_wanted("auto") == installed_elsewhere and not marks_wanted("never")


def test_the_lock_marks_setting_from_zreps_table_and_the_environment(tmp_path: Path) -> None:
    assert EngineConfig().lock_marks == "auto"
    assert EngineConfig.from_env({"ZREPQ_LOCK_MARKS": " Never "}).lock_marks == "never"
    with pytest.raises(ConfigError, match="ZREPQ_LOCK_MARKS must be one of auto, always, never"):
        EngineConfig.from_env({"ZREPQ_LOCK_MARKS": "yes"})
    cfg = tmp_path / "zrepq.toml"
    cfg.write_text('[zrep]\nlock_marks = "always"\n')
    assert load({"ZREPQ_CONFIG": str(cfg)}).engine_config().lock_marks == "always"
    env = {"ZREPQ_CONFIG": str(cfg), "ZREPQ_LOCK_MARKS": "never"}
    assert load(env).engine_config().lock_marks == "never"  # the variable wins, as zrep's
    cfg.write_text('[zrep]\nlock_marks = "sometimes"\n')
    with pytest.raises(ConfigError, match="lock_marks"):
        load({"ZREPQ_CONFIG": str(cfg)})
