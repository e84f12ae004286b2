"""Small helpers for harnesses that start servers and watch processes: free ports, waiting
for a port, starting a logged service and stopping it by pid, /proc lookups."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port on `address` nobody listens on right now (the caller retries if it loses a
    race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes],
    timeout: float = 10.0,
    banner: bytes = b"",
    address: str = "127.0.0.1",
) -> bool:
    """True once something accepts on `address`:`port` (and says `banner`); False if `proc`
    dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=1.0) as s:
                if not banner or s.recv(64).startswith(banner):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def stop_pid(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace`; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


def spawn_logged(argv: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen[bytes]:
    """Start a service with its output appended to `log`, in its own process group (one
    killpg stops it and everything it forks), dying with the harness (`child_preexec`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            process_group=0,
            preexec_fn=child_preexec(),
        )


# -- /proc ------------------------------------------------------------------------------------


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def ppid_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 4 is the ppid; the command name (field 2) may contain spaces, so split after ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _by_parent() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = ppid_of(int(entry))
            if parent is not None:
                by_parent.setdefault(parent, []).append(int(entry))
    return by_parent


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    return _by_parent().get(pid, [])


def descendants(pid: int) -> list[int]:
    """All living descendants of `pid` (children first)."""
    by_parent = _by_parent()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pids_matching(cmdline_part: str) -> list[int]:
    """Pids (other than ours) whose NUL-separated command line contains `cmdline_part`."""
    found = []
    needle = cmdline_part.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def child_preexec() -> Callable[[], None] | None:
    """Children of the harness die with it, except for a demo stack meant to outlive it
    (`ZREPQ_HARNESS_DETACH=1`, set by scripts/demo.py; stopped with `scripts/demo.sh stop`)."""
    from workers.exec.procs import die_with_parent

    if os.environ.get("ZREPQ_HARNESS_DETACH") == "1":
        return None
    return die_with_parent()
