"""Processes with chosen pids and process trees, for the lock tests.

`spawn_with_pid` gives a new process a pid that an earlier, dead process had, through the
kernel's `ns_last_pid` (root only): a real reused pid, not a simulated one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
FAKE_ZREP = Path(__file__).resolve().parent / "fake-zrep"


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


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a process started with `process_group=0`, and everything in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
