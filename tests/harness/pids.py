"""Processes with chosen pids and process trees, for the lock tests; signalling processes
the harness started without ever signalling a stranger that got their pid.

`spawn_with_pid` gives a new process a pid that an earlier, dead process had, through the
kernel's `ns_last_pid` (root only): a real reused pid, not a simulated one.

A pid names a process only until the process is reaped; on this machine (`pid_max` 32768)
a fork storm, a benchmark's thousands of short `zfs` processes, gives the number to another
process within a minute. So the harness signals only what it can still name for sure:
- a child it has not reaped yet (`stop_group`, `kill_group`): its pid, and so the id of the
  process group it leads, stays its own until then;
- a pidfd (`pin_tree`, `kill_pinned`): opened while the process is known to be the one wanted,
  it refers to that process for good, and a signal through it never reaches another.
Killing by a number remembered from earlier (`os.kill(pid)`, `os.killpg(pid)` after reaping)
once killed another session's process that had been given the number: a lock test's holder,
whose lock then looked free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
FAKE_ZREP = Path(__file__).resolve().parent / "fake-zrep"
GATED_CAT = Path(__file__).resolve().parent / "gated-cat"  # `cat` once a gate file exists


def spawn_with_pid(
    pid: int, argv: Sequence[str], timeout: float = 20.0, **kw: Any
) -> subprocess.Popen[Any]:
    """Start `argv` as process `pid`, whose earlier owner has ended.

    The kernel frees a pid only once nothing uses it any more, also not as a process group
    id (a killed group's last members are reaped by init a moment later), and another process
    of the machine may fork in between: so try until it works."""
    deadline = time.monotonic() + timeout
    while True:
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(list(argv), **kw)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not start a process with pid {pid} in {timeout}s")
        time.sleep(0.05)


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in found}
        for p in frontier:
            try:
                found[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                found[p] = ""
    return found


def exited(proc: subprocess.Popen[Any]) -> bool:
    """Has `proc` (our child) exited? Asked without reaping it (WNOWAIT), so that its pid and
    process group id stay its own."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM the process group that `proc` leads (`process_group=0`), SIGKILL what is left
    of the group after `grace` seconds (children that outlived the leader too), reap `proc`.

    The group is signalled only while `proc` is unreaped: a zombie leader still holds the
    group id. A leader already reaped (an earlier `poll()` saw it exit) leaves a number that
    may name another group by now, so that group is not signalled at all."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not exited(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a process started with `process_group=0`, and everything in its group (only
    while `proc` is unreaped: see `stop_group`)."""
    stop_group(proc, 0.0)


def _stat_fields(pid: int) -> list[str] | None:
    """`/proc/PID/stat` from field 3 (state) on, or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pin(pid: int, check: Callable[[list[str]], bool]) -> int | None:
    """A pidfd for process `pid` if, once opened, the process it names passes `check` (given
    its `/proc/PID/stat` fields from the state on), else None. The fields are read after the
    pidfd is opened and the process is found alive (a zombie counts) after reading them: so
    they are that process's, not those of a later owner of the number."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    fields = _stat_fields(pid)
    try:
        signal.pidfd_send_signal(fd, 0)
    except ProcessLookupError:
        fields = None
    if fields is None or not check(fields):
        os.close(fd)
        return None
    return fd


def pin_tree(root: int) -> list[int]:
    """pidfds of every process below `root` now, each checked to be a child of `root` or of
    another process pinned here (read after opening it: see `pin`). `root` must be a process
    whose pid cannot change hands meanwhile (an unreaped child of ours). Later, however late,
    `kill_pinned` kills these and nothing else."""
    pinned, fds = {root}, []
    for pid in descendants(root):  # parents before their children
        fd = pin(pid, lambda f: int(f[1]) in pinned)
        if fd is not None:
            pinned.add(pid)
            fds.append(fd)
    return fds


def pin_all(pids: Iterable[int], check: Callable[[list[str]], bool] = lambda f: True) -> list[int]:
    """`pin` each of `pids` that passes `check`."""
    return [fd for fd in (pin(p, check) for p in pids) if fd is not None]


def kill_pinned(fds: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Signal the pinned processes (those that have not ended) and close their pidfds."""
    for fd in fds:
        try:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
        finally:
            os.close(fd)
