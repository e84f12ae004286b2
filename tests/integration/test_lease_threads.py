"""The lease's threads: one renewal and one watchdog thread per `RedisLocks`, shared by every
lease it holds, started lazily in the process that holds (also after a fork), ending when idle.
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

from tests.harness.netutil import REPO
from workers import lease
from workers.keys import LOCK_PREFIX
from workers.lease import RedisLocks

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
    locks = RedisLocks(redis_client, owner="hosta", ttl=0.6)
    with locks.hold(["a"], operation="sync") as a:
        time.sleep(0.3)  # b's deadlines fall between a's
        with locks.hold(["b"], operation="sync") as b, locks.hold(["c"], operation="sync") as c:
            time.sleep(1.5)  # well past the TTL: all three were renewed
            for handle, key in ((a, "a"), (b, "b"), (c, "c")):
                assert not handle.lost.is_set()
                assert locks.holder(key) == handle.token
            redis_client.delete(LOCK_PREFIX + "b")
            assert b.lost.wait(1.0)
            time.sleep(0.5)
            assert not a.lost.is_set() and not c.lost.is_set()
            assert locks.holder("a") == a.token and locks.holder("c") == c.token
    assert {locks.holder(k) for k in "abc"} == {None}


def test_a_lease_added_while_idle_wakes_the_threads(redis_client: redis.Redis) -> None:
    """A lease taken after the threads went to sleep with nothing to do is still renewed."""
    locks = RedisLocks(redis_client, owner="hosta", ttl=0.6)
    with locks.hold(["a"], operation="sync"):
        pass
    time.sleep(0.1)  # both threads now wait for work, without a deadline
    with locks.hold(["a"], operation="sync") as handle:
        time.sleep(1.2)
        assert not handle.lost.is_set()
        assert locks.holder("a") == handle.token


def test_idle_threads_end_and_start_again(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "_IDLE_EXIT", 0.2)
    locks = RedisLocks(redis_client, owner="idle-owner", ttl=0.6)
    with locks.hold(["a"], operation="sync"):
        assert len(_lease_threads("idle-owner")) == 2
    deadline = time.monotonic() + 3
    while _lease_threads("idle-owner") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lease_threads("idle-owner") == []
    with locks.hold(["a"], operation="sync") as handle:
        assert len(_lease_threads("idle-owner")) == 2
        time.sleep(1.0)
        assert not handle.lost.is_set() and locks.holder("a") == handle.token


def test_a_forked_child_starts_its_own_threads(redis_client: redis.Redis, redis_url: str) -> None:
    """As in the Celery prefork pool: the parent's threads do not survive a fork, so the child
    must start its own, or its leases would silently go unrenewed."""
    locks = RedisLocks(redis_client, owner="hosta", ttl=0.6)
    with locks.hold(["parent"], operation="sync"):
        pass  # the parent's threads are running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report with the exit status only
        status = 1
        try:
            os.close(read)
            child = RedisLocks(redis.Redis.from_url(redis_url), owner="child", ttl=0.6)
            with (
                locks.hold(["inherited"], operation="sync") as h1,
                child.hold(["fresh"], operation="sync") as h2,
            ):
                time.sleep(1.5)
                ok = not h1.lost.is_set() and not h2.lost.is_set()
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
        time.sleep(1.0)
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
