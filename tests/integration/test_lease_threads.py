"""The lease's threads: one renewal and one watchdog thread per `RedisLocks`, shared by every
lease it holds, started lazily in the process that holds (also after a fork), ending when idle.

They run on simulated time (`tests.harness.clock.FakeClock`) with a long TTL, except across a
fork and a SIGSTOP, which are about real processes and use the real clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis

from tests.harness.clock import FakeClock
from tests.harness.netutil import REPO, wait_until
from workers import renewal
from workers.keys import LOCK_PREFIX
from workers.lease import RedisLocks

TTL = 60.0  # renewed every 20 s; lost 59 s after the last renewal began

pytestmark = pytest.mark.integration


def _lease_threads(owner: str) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name in (f"lease-renew {owner}", f"lease-watch {owner}")
    ]


def test_threads_start_with_the_first_lease_and_are_shared(redis_client: redis.Redis) -> None:
    locks = RedisLocks(redis_client, owner="shared-owner")
    assert _lease_threads("shared-owner") == []  # lazily: nothing until a lease is held
    for i in range(50):
        with locks.hold([f"k{i}"], operation="sync"):
            pass
    with locks.hold(["a"], operation="sync"), locks.hold(["b"], operation="sync"):
        threads = _lease_threads("shared-owner")
        assert len(threads) == 2
        assert all(t.daemon for t in threads)
    assert _lease_threads("shared-owner") == threads  # not stopped per lease either


def test_concurrent_leases_are_each_renewed_and_lost_alone(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="hosta", ttl=TTL, clock=clock)
    with locks.hold(["a"], operation="sync") as a:
        clock.run(10, step=5)  # b's deadlines fall between a's
        with locks.hold(["b"], operation="sync") as b, locks.hold(["c"], operation="sync") as c:
            clock.run(TTL + 10, step=5)  # well past the TTL: all three were renewed
            for handle, key in ((a, "a"), (b, "b"), (c, "c")):
                assert not handle.lost.is_set()
                assert locks.holder(key) == handle.token
            redis_client.delete(LOCK_PREFIX + "b")
            clock.run(TTL / 3, step=5)  # b's next renewal finds out
            assert b.lost.is_set()
            clock.run(TTL, step=5)
            assert not a.lost.is_set() and not c.lost.is_set()
            assert locks.holder("a") == a.token and locks.holder("c") == c.token
    assert {locks.holder(k) for k in "abc"} == {None}


def test_a_lease_added_while_idle_wakes_the_threads(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease taken after the threads went to sleep with nothing to do is still renewed:
    taking it wakes them (idle, they would sleep far past its renewal and its end)."""
    monkeypatch.setattr(renewal, "IDLE_EXIT", 10 * TTL)
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="hosta", ttl=TTL, clock=clock)
    with locks.hold(["a"], operation="sync"):
        pass
    clock.run(TTL, step=5)  # both threads now wait for work, up to IDLE_EXIT
    with locks.hold(["a"], operation="sync") as handle:
        clock.run(2 * TTL, step=5)
        assert not handle.lost.is_set()
        assert locks.holder("a") == handle.token


def test_idle_threads_end_and_start_again(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="idle-owner", ttl=TTL, clock=clock)
    with locks.hold(["a"], operation="sync"):
        clock.settle()  # both threads look after the lease
        assert len(_lease_threads("idle-owner")) == 2
    # Each finds nothing to do when it next looks (the renewal at 20 s; the watchdog at 30 s,
    # the longest it sleeps), then waits IDLE_EXIT (30 s) for a lease before it ends.
    clock.run(20 + renewal.IDLE_EXIT - 1, step=1)
    assert len(_lease_threads("idle-owner")) == 2
    clock.run(1, step=1)
    assert [t.name for t in _lease_threads("idle-owner")] == ["lease-watch idle-owner"]
    clock.run(10, step=1)
    assert _lease_threads("idle-owner") == []
    with locks.hold(["a"], operation="sync") as handle:
        assert len(_lease_threads("idle-owner")) == 2
        clock.run(TTL + 10, step=5)
        assert not handle.lost.is_set() and locks.holder("a") == handle.token


def _renewed(client: redis.Redis, *keys: str) -> bool:
    """Have all these leases been renewed since their TTL was pushed to an hour?"""
    return all(0 < client.pttl(LOCK_PREFIX + k) <= 3000 for k in keys)


def test_a_forked_child_starts_its_own_threads(redis_client: redis.Redis, redis_url: str) -> None:
    """As in the Celery prefork pool: the parent's threads do not survive a fork, so the child
    must start its own, or its leases would silently go unrenewed. (Real clock: TTL 3 s,
    renewed every second; a renewal shows as the key's TTL set back from an hour.)"""
    locks = RedisLocks(redis_client, owner="hosta", ttl=3.0)
    with locks.hold(["parent"], operation="sync"):
        pass  # the parent's threads are running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report with the exit status only
        status = 1
        try:
            os.close(read)
            client = redis.Redis.from_url(redis_url)
            child = RedisLocks(client, owner="child", ttl=3.0)
            with (
                locks.hold(["inherited"], operation="sync") as h1,
                child.hold(["fresh"], operation="sync") as h2,
            ):
                for k in ("inherited", "fresh"):
                    client.pexpire(LOCK_PREFIX + k, 3_600_000)
                ok = wait_until(lambda: _renewed(client, "inherited", "fresh"), timeout=30)
                ok = ok and not h1.lost.is_set() and not h2.lost.is_set()
                ok = ok and locks.holder("inherited") == h1.token
                ok = ok and child.holder("fresh") == h2.token
            status = 0 if ok else 2
        finally:
            os.write(write, b"x")
            os._exit(status)
    os.close(write)
    os.read(read, 1)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert locks.holder("inherited") is None and locks.holder("fresh") is None
    with locks.hold(["parent"], operation="sync") as handle:  # the parent is unaffected
        redis_client.pexpire(LOCK_PREFIX + "parent", 3_600_000)
        assert wait_until(lambda: _renewed(redis_client, "parent"), timeout=30)
        assert not handle.lost.is_set()


_STOPPED_HOLDER = textwrap.dedent(
    """
    import sys, time, redis
    from workers.lease import RedisLocks
    locks = RedisLocks(redis.Redis.from_url(sys.argv[1]), owner="paused", ttl=1.0)
    with locks.hold(["k"], operation="sync") as handle:
        print("held", flush=True)
        while not handle.lost.is_set():
            print("step", flush=True)
            time.sleep(0.01)
        print("lost", flush=True)
    """
)


def test_a_holder_paused_past_its_ttl_sees_lost_when_continued(redis_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_HOLDER, redis_url],
        stdout=subprocess.PIPE,
        bufsize=0,  # raw reads: nothing printed before the stop is held in a buffer here
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        assert proc.stdout.readline() == b"held\n"
        time.sleep(0.5)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        os.set_blocking(fd, False)
        try:
            while os.read(fd, 65536):  # what it printed before the stop
                pass
        except BlockingIOError:
            pass
        os.set_blocking(fd, True)
        time.sleep(1.5)  # past the TTL
        proc.send_signal(signal.SIGCONT)
        out = b""
        while chunk := os.read(fd, 65536):
            out += chunk
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.decode().split()
    assert lines and lines[-1] == "lost", lines
    # At most the one step it may have been in the middle of when it was stopped.
    assert lines.count("step") <= 1, lines
