"""The harness kills what it started and never a process that was given one of their pids.

Real processes, real reused pids (`spawn_with_pid`, through `ns_last_pid`). The harness used
to `killpg` a worker's pid after reaping it, and `kill` pids listed before a grace period;
under a fork storm (this machine's `pid_max` is 32768) those numbers soon belonged to other
processes: once, another session's lock-test holders, whose lock then looked free.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.netutil import wait_until
from tests.harness.pids import (
    descendants,
    exited,
    kill_pinned,
    pin,
    pin_tree,
    spawn_with_pid,
    stop_group,
)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.returncode is None:
            p.kill()
            p.wait()


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_stop_group_stops_the_whole_group_while_its_leader_is_ours(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 61"], process_group=0)
    procs.append(leader)
    assert wait_until(lambda: "sleep 60 " in " ".join(descendants(leader.pid).values()), 20)
    (member,) = descendants(leader.pid)  # `sleep 60`, in the group, outlives its parent's TERM
    pidfd = os.pidfd_open(member)
    try:
        stop_group(leader, grace=5.0)
        assert leader.returncode == -signal.SIGTERM
        # That process ended (its pidfd is readable once it has: a later owner of its pid
        # cannot make it so).
        assert select.select([pidfd], [], [], 10)[0] == [pidfd]
    finally:
        os.close(pidfd)


def test_a_reaped_leaders_pid_given_to_another_group_is_not_signalled(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    leader = subprocess.Popen(["true"], process_group=0)
    procs.append(leader)
    assert leader.wait() == 0  # reaped: its pid and group id are free
    assert exited(leader)
    # Another session's process group, given that pid (as a lock test's holder once was).
    stranger = spawn_with_pid(leader.pid, ["sleep", "60"], process_group=0)
    procs.append(stranger)
    stop_group(leader, grace=1.0)
    time.sleep(0.2)
    assert stranger.poll() is None  # untouched


def test_pinned_processes_are_killed_and_a_later_owner_of_one_of_their_pids_is_not(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 62 & wait"], process_group=0)
    procs.append(parent)
    assert wait_until(lambda: len(descendants(parent.pid)) == 2, 20)
    kids = {cmd.split()[1]: pid for pid, cmd in descendants(parent.pid).items()}
    pinned = pin_tree(parent.pid)
    assert len(pinned) == 2
    # One ends during the "grace period" and its pid is given to an unrelated process.
    gone = kids["60"]
    os.kill(gone, signal.SIGKILL)  # still the shell's unreaped child here: no stale pid yet
    assert wait_until(lambda: not os.path.exists(f"/proc/{gone}"), 20)  # `wait` reaped it
    stranger = spawn_with_pid(gone, ["sleep", "63"])
    procs.append(stranger)
    kill_pinned(pinned)
    assert wait_until(lambda: not running(kids["62"]), 10)  # the pinned one that still ran
    time.sleep(0.2)
    assert stranger.poll() is None  # the stranger with the first one's pid: untouched
    stop_group(parent, grace=5.0)


def test_a_listed_pid_that_changed_hands_before_pinning_is_left_out(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """What `pin_tree` checks once a pidfd is open: the process is a child of the tree. A
    process that got a listed pid in between (here: a child of this test, not of the tree) is
    not pinned, so not killed."""
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], process_group=0)
    procs.append(parent)
    stranger = subprocess.Popen(["sleep", "64"])
    procs.append(stranger)
    assert wait_until(lambda: len(descendants(parent.pid)) == 1, 20)
    (kid,) = descendants(parent.pid)
    below_parent = lambda fields: int(fields[1]) == parent.pid  # noqa: E731
    assert pin(stranger.pid, below_parent) is None
    fd = pin(kid, below_parent)
    assert fd is not None
    kill_pinned([fd])
    assert parent.wait(10) == 0  # its `wait` returned: the kid is dead
    assert stranger.poll() is None
