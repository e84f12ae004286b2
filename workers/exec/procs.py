"""Child-process plumbing shared by the local runner and the pipeline.

Every child we start runs in its own process group (so one `killpg` stops a whole pipeline)
and carries `PR_SET_PDEATHSIG(SIGKILL)`, so a worker that is SIGKILLed (OOM, `celery` hard
timeout, `kill -9`) does not leave `zfs send` or `ssh` running orphaned.

Caveat, from prctl(2): the "parent" whose death fires the signal is the *thread* that forked
the child, not the process. Both users of this module start their children from the calling
thread and wait for them before returning, so the thread outlives its children. Never start
a child here from a short-lived helper thread and return while it still runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Protocol

_PR_SET_PDEATHSIG = 1


class _Waitable(Protocol):
    """The part of `subprocess.Popen` this module needs."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


# Resolved once, in the parent: the pre-exec hook must do as little as possible between
# fork and exec (a forked child of a threaded process may only rely on what is already set up).
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes the child get SIGKILL when the forking thread dies.

    The parent's pid is captured before the fork: if the parent died between fork and prctl
    the signal would never come, so the child checks and exits by itself.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os._exit(126)

    return preexec


def describe_status(status: int | None) -> str:
    """`exit 3`, `killed by SIGPIPE`; `status` as in Popen.returncode (negative = signal)."""
    if status is None:
        return "no exit status"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit {status}"


def signal_group(pgid: int, sig: int) -> None:
    """Signal a process group; a group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def wait_all(procs: Sequence[_Waitable], deadline: float) -> bool:
    """Poll until every process has exited or `deadline` (monotonic) passes; True if all did."""
    while True:
        if all(p.poll() is not None for p in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop_group(pgid: int, procs: Sequence[_Waitable], grace: float) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, and reap every process.

    The group id cannot have been reused while one of `procs` is unreaped, so only signal the
    group while one is still outstanding.
    """
    if any(p.poll() is None for p in procs):
        signal_group(pgid, signal.SIGTERM)
        if not wait_all(procs, time.monotonic() + grace):
            signal_group(pgid, signal.SIGKILL)
    for p in procs:
        p.wait()
