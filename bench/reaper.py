"""Run a command as a child subreaper, so that the CPU of everything it starts is counted.

    python -m bench.reaper [--after 'CMD'] -- COMMAND [ARG...]

The peers' ssh clients daemonize: syncoid's and zfs-autobackup's `ControlPersist` masters
leave their parent and would be reparented to init, taking their CPU (key exchange, every
session's channel) out of the benchmark's process tree (`bench.common.tree_cpu`). Here they
are reparented to this process instead (PR_SET_CHILD_SUBREAPER). When COMMAND ends, `--after`
runs (e.g. `ssh -O exit` for a master that persists), then every remaining descendant is
waited for (killed after 30 s), so their CPU lands in this process's children's time, which
the benchmark reads when this process is reaped. Exit status: COMMAND's.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

from tests.harness.pids import kill_pinned, pin_tree

PR_SET_CHILD_SUBREAPER = 36


def reap_all(deadline: float) -> None:
    """Wait for every child left (the orphans now ours); kill what outlives the deadline."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            # Pinned (pidfds) and checked to be ours once pinned: a listed pid that ended
            # meanwhile may belong to another process already (tests/harness/pids.py).
            kill_pinned(pin_tree(os.getpid()))
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    after = None
    if argv[:1] == ["--after"]:
        after, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.exit("usage: python -m bench.reaper [--after CMD] -- COMMAND [ARG...]")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"bench.reaper: prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
    rc = subprocess.call(argv)
    if after:
        subprocess.call(after, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reap_all(time.monotonic() + 30)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
