"""Is the process that took a lock still running? Decided from /proc, never from its name.

A pid alone proves nothing: the process may have died and the number been given to another
one. What does identify a process on Linux is (boot, pid namespace, pid, start time): the
boot id (`/proc/sys/kernel/random/boot_id`, new at every boot), the pid namespace the number
belongs to, and the process's start time (field 22 of `/proc/PID/stat`, clock ticks since
boot), which differs for any later process given the same pid.

Two rules use this:
- `gone(pid, identity)`, for zrepq's own lock tokens, which carry the holder's identity: the
  holder is provably gone when, on the same boot and in the same pid namespace, its pid is
  absent, a zombie, or a process with another start time (the pid was reused). On another boot
  or namespace nothing can be proved: `None`.
- `lock_pid_holder(pid, lock_time)`, for zrep's `TAG:lock-pid`/`TAG:lock-time`, which carry only
  a pid and a wall-clock time: the holder is live when that pid exists (not a zombie) and
  started no later than `lock-time` (plus `LOCK_TIME_SLACK`); a process started after the
  lock was written cannot have written it. Without a readable lock-time, existence decides, as
  zrep's own `kill -0` does.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROC = Path("/proc")
# zrep writes `lock-time` with `date +%Y%m%d%H%M%S` (local time, whole seconds).
LOCK_TIME_FORMAT = "%Y%m%d%H%M%S"
# Seconds a lock-pid process may seem to have started after its lock-time and still count as
# the holder: lock-time is cut to the second, the boot time (`btime`) that turns a start in
# ticks into wall time is also whole seconds, and a small clock step may sit in between. A
# reused pid is only mistaken for the holder if it was reused within this many seconds, and
# that errs on the side of refusing.
LOCK_TIME_SLACK = 5.0
_ZOMBIE = ("Z", "X", "x")  # zombie, dead: the process has exited, its pid not yet reaped


@dataclass(frozen=True)
class ProcStat:
    """The fields of `/proc/PID/stat` that liveness needs."""

    pid: int
    comm: str
    state: str
    start_ticks: int  # field 22: clock ticks after boot

    @property
    def exited(self) -> bool:
        return self.state in _ZOMBIE


@dataclass(frozen=True)
class ProcessIdentity:
    """What names one process on one machine for as long as it runs, and never another."""

    boot: str
    pidns: str
    start: int  # start time, clock ticks after boot


def parse_stat(text: str) -> ProcStat:
    """Parse `/proc/PID/stat`. The command name may hold spaces and parentheses, so the
    fields are counted from the *last* ')'."""
    head, sep, tail = text.rpartition(")")
    pid_text, paren, comm = head.partition(" (")
    fields = tail.split()
    if not sep or not paren or len(fields) < 20 or not pid_text.strip().isdigit():
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    return ProcStat(int(pid_text), comm, fields[0], int(fields[19]))


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The process `pid` as /proc shows it now, or None when there is none."""
    if pid <= 0:
        return None
    try:
        return parse_stat((proc / str(pid) / "stat").read_text(errors="replace"))
    except (OSError, ValueError):
        return None


def exists(pid: int) -> bool:
    """`kill -0`: is there a process `pid` (even one we may not signal)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@lru_cache(maxsize=4)
def boot_id(proc: Path = PROC) -> str:
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@lru_cache(maxsize=4)
def pid_namespace(proc: Path = PROC) -> str:
    """The inode number of this process's pid namespace ("4026531836"), or ""."""
    try:
        link = os.readlink(proc / "self/ns/pid")
    except OSError:
        return ""
    m = re.fullmatch(r"pid:\[(\d+)\]", link)
    return m.group(1) if m else ""


_CURRENT: dict[int, ProcessIdentity] = {}


def current_identity() -> ProcessIdentity | None:
    """This process's identity (None where /proc cannot tell it). Computed once per pid, so
    a forked child (a Celery pool process) gets its own."""
    pid = os.getpid()
    found = _CURRENT.get(pid)
    if found is None:
        stat = read_stat(pid)
        boot, ns = boot_id(), pid_namespace()
        if stat is None or not boot or not ns:
            return None
        found = _CURRENT[pid] = ProcessIdentity(boot, ns, stat.start_ticks)
    return found


def gone(pid: int, identity: ProcessIdentity, proc: Path = PROC) -> bool | None:
    """True: the process `identity` (pid `pid`) has provably ended. False: it still runs.
    None: it ran on another boot or in another pid namespace, so nothing here can tell."""
    here = (boot_id(proc), pid_namespace(proc))
    if not identity.boot or (identity.boot, identity.pidns) != here:
        return None
    stat = read_stat(pid, proc)
    if stat is None:
        # Absent from /proc; unless /proc hides it from us (hidepid) while it exists.
        return not exists(pid)
    return stat.exited or stat.start_ticks != identity.start


@lru_cache(maxsize=1)
def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def boot_time(proc: Path = PROC) -> float | None:
    """Epoch seconds of this boot (`btime` in /proc/stat), read each time: a clock step
    moves it."""
    try:
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def start_epoch(stat: ProcStat, proc: Path = PROC) -> float | None:
    """When the process started, in epoch seconds by the current clock."""
    btime = boot_time(proc)
    if btime is None:
        return None
    return btime + stat.start_ticks / _ticks_per_second()


def lock_time_epoch(value: str | None) -> float | None:
    """zrep's `lock-time` (`YYYYmmddHHMMSS`, local time) as epoch seconds, or None.

    In the hour that repeats when daylight saving time ends, the wall time names two instants:
    the later one is taken, so a holder is never judged to have started after its lock."""
    if not value or len(value) != 14 or not value.isdigit():
        return None
    try:
        wall = time.strptime(value, LOCK_TIME_FORMAT)[:6]
    except ValueError:
        return None
    readings = []
    for dst in (0, 1):
        t = time.mktime((*wall, 0, 0, dst))
        if time.localtime(t)[:6] == wall:
            readings.append(t)
    return max(readings) if readings else time.mktime((*wall, 0, 0, -1))


@dataclass(frozen=True)
class LockPidVerdict:
    """What `TAG:lock-pid` names: `live` (a holder), or why it is stale (`gone`, `reused`)."""

    pid: int
    state: str  # "live", "gone", "reused"
    command: str = ""  # the live holder's command line, for messages
    started: float | None = None  # epoch, when known

    @property
    def live(self) -> bool:
        return self.state == "live"


def command_line(pid: int, proc: Path = PROC) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def lock_pid_holder(
    pid: int, lock_time: str | None, *, slack: float = LOCK_TIME_SLACK, proc: Path = PROC
) -> LockPidVerdict:
    """Apply the lock-pid rule (see the module docstring) to `pid` and its `lock-time`."""
    stat = read_stat(pid, proc)
    if stat is None:
        return LockPidVerdict(pid, "live" if exists(pid) else "gone")
    if stat.exited:
        return LockPidVerdict(pid, "gone")
    started = start_epoch(stat, proc)
    since = lock_time_epoch(lock_time)
    if started is not None and since is not None and started > since + slack:
        return LockPidVerdict(pid, "reused", started=started)
    return LockPidVerdict(pid, "live", command_line(pid, proc) or stat.comm, started)


__all__ = [
    "LOCK_TIME_FORMAT",
    "LOCK_TIME_SLACK",
    "LockPidVerdict",
    "ProcStat",
    "ProcessIdentity",
    "boot_id",
    "current_identity",
    "gone",
    "lock_pid_holder",
    "lock_time_epoch",
    "parse_stat",
    "pid_namespace",
    "read_stat",
]
