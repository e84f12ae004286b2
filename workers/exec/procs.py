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
import errno
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
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


@functools.cache
def _setpriv() -> str | None:
    """util-linux's `setpriv` if it can set the parent-death signal (2.33 and later)."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        probe = subprocess.run(
            [path, "--pdeathsig", "KILL", "--", path, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return path if probe.returncode == 0 else None


def _check_program(program: str, env: Mapping[str, str] | None) -> None:
    """Raise what `Popen` would for a program that cannot be run (not found, not executable)."""
    if os.sep in program:
        candidates = [program]
    else:
        path = (os.environ if env is None else env).get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", program) for d in path.split(os.pathsep)]
    denied = False
    for candidate in candidates:
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return
            denied = True
    code = errno.EACCES if denied else errno.ENOENT
    raise (PermissionError if denied else FileNotFoundError)(code, os.strerror(code), program)


def child_argv(
    argv: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[list[str], Callable[[], None] | None]:
    """The argv and `preexec_fn` that start `argv` as a child dying with this thread.

    With util-linux `setpriv` the child is `setpriv --pdeathsig KILL -- argv...` (it sets the
    signal and execs the program, same pid) and no `preexec_fn` is needed, so `Popen` can use
    vfork. A `preexec_fn` forces a full fork of the worker, which costs several milliseconds
    per command for a worker-sized process (measured: 8.5 ms vs 1.2 ms per spawn idle, 25 ms
    vs 4.5 ms on a loaded 2-core machine), and a sync runs a dozen commands. The one thing
    lost is `die_with_parent`'s check for a parent that died before the signal was set: a
    window of microseconds, after which an orphaned stage still dies of SIGPIPE.

    Without `setpriv`, `die_with_parent()` as before. A program that cannot be run raises
    here what `Popen` would raise, so callers report it the same way either way.
    """
    wrapper = _setpriv()
    if wrapper is None or not argv:
        return list(argv), die_with_parent()
    _check_program(argv[0], env)
    return [wrapper, "--pdeathsig", "KILL", "--", *argv], None


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
