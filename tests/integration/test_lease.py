"""The Redis lease on a real redis-server, including its failure modes."""

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
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.harness.netutil import REPO, free_port, wait_until
from tests.harness.redis_server import RedisServer
from workers.engine.errors import HostUnreachable, LockHeld, LockLost
from workers.keys import LOCK_PREFIX, lock_key
from workers.lease import RedisLocks

pytestmark = pytest.mark.integration


def test_hold_is_exclusive_and_names_its_holder(redis_client: redis.Redis) -> None:
    a = RedisLocks(redis_client, owner="hosta")
    b = RedisLocks(redis_client, owner="hostb")
    with a.hold(["zrep:hosta:pool/fs"], operation="sync") as handle:
        assert handle.token.startswith(f"hosta:{os.getpid()}:sync:")
        assert a.holder("zrep:hosta:pool/fs") == handle.token
        assert redis_client.get(lock_key("zrep", "hosta", "pool/fs")) == handle.token.encode()
        with pytest.raises(LockHeld) as info, b.hold(["zrep:hosta:pool/fs"], operation="failover"):
            pass
        assert info.value.holder == handle.token
        assert f"held by pid {os.getpid()} on hosta (sync) since " in str(info.value)
        assert "zrep:hosta:pool/fs" in str(info.value)
        assert info.value.retryable
        assert not handle.lost.is_set()
    assert a.holder("zrep:hosta:pool/fs") is None


def test_released_when_the_body_raises(redis_client: redis.Redis) -> None:
    locks = RedisLocks(redis_client, owner="hosta")
    with pytest.raises(RuntimeError), locks.hold(["k"], operation="sync"):
        raise RuntimeError("boom")
    assert locks.holder("k") is None


def test_keys_are_taken_in_sorted_order_and_rolled_back(
    redis_client: redis.Redis, redis_url: str
) -> None:
    locks = RedisLocks(redis_client, owner="hosta")
    other = RedisLocks(redis_client, owner="hostb")
    sets: list[str] = []
    with other.hold(["b"], operation="takeover") as theirs:
        with (
            _watch_sets(redis_url, sets),
            pytest.raises(LockHeld) as info,
            locks.hold(["c", "b", "a"], operation="failover"),
        ):
            pass
        assert info.value.holder == theirs.token
        # "a" was taken first, then "b" failed: "a" was given back and "c" never tried.
        assert [k.removeprefix(LOCK_PREFIX) for k in sets] == ["a", "b"]
        assert locks.holder("a") is None and locks.holder("c") is None
        assert locks.holder("b") == theirs.token
    with locks.hold(["c", "b", "a"], operation="failover") as mine:
        assert {locks.holder(k) for k in "abc"} == {mine.token}


def test_wait_for_a_lease_being_released(redis_client: redis.Redis) -> None:
    locks = RedisLocks(redis_client, owner="hosta")
    held = threading.Event()
    release = threading.Event()

    def other_holder() -> None:
        with RedisLocks(redis_client, owner="hostb").hold(["k"], operation="sync"):
            held.set()
            release.wait(5)

    t = threading.Thread(target=other_holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(LockHeld) as info, locks.hold(["k"], operation="sync", wait=0.3):
            pass
        assert "waited" in str(info.value)
        threading.Timer(0.3, release.set).start()
        with locks.hold(["k"], operation="sync", wait=3) as handle:
            assert locks.holder("k") == handle.token
    finally:
        release.set()
        t.join()


def test_renewal_keeps_a_lease_past_its_ttl(redis_client: redis.Redis) -> None:
    locks = RedisLocks(redis_client, owner="hosta", ttl=0.6)
    with locks.hold(["k"], operation="sync") as handle:
        time.sleep(1.5)
        assert locks.holder("k") == handle.token
        assert 0 < redis_client.pttl(LOCK_PREFIX + "k") <= 600
        assert not handle.lost.is_set()
        handle.check()


_HOLDER = textwrap.dedent(
    """
    import sys, time, redis
    from workers.lease import RedisLocks
    locks = RedisLocks(redis.Redis.from_url(sys.argv[1]), owner="victim", ttl=1.0)
    with locks.hold(["k"], operation="sync") as handle:
        print(handle.token, flush=True)
        time.sleep(60)
    """
)


def test_a_sigkilled_holder_frees_the_key_within_the_ttl(
    redis_client: redis.Redis, redis_url: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, redis_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        token = proc.stdout.readline().strip()
        locks = RedisLocks(redis_client, owner="hosta")
        time.sleep(1.2)  # past one TTL: still held, so its renewal works
        assert locks.holder("k") == token
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    killed = time.monotonic()
    assert wait_until(lambda: locks.holder("k") is None, timeout=2.0)
    assert time.monotonic() - killed <= 1.0 + 0.2  # the TTL, plus polling slack
    with locks.hold(["k"], operation="sync"):
        pass


@pytest.mark.parametrize("how", ["deleted", "stolen"])
def test_lost_is_set_when_the_key_is_taken_away(redis_client: redis.Redis, how: str) -> None:
    locks = RedisLocks(redis_client, owner="hosta", ttl=0.6)
    with locks.hold(["k"], operation="sync") as handle:
        if how == "deleted":
            redis_client.delete(LOCK_PREFIX + "k")
        else:
            redis_client.set(LOCK_PREFIX + "k", "thief:1:sync:x")
        assert handle.lost.wait(1.0)  # the next renewal, ttl/3 later, finds out
        with pytest.raises(LockLost):
            handle.check()
    # Leaving did not delete somebody else's key.
    expected = None if how == "deleted" else "thief:1:sync:x"
    assert locks.holder("k") == expected


def test_redis_restarted_while_held_means_lost(
    redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    """Without persistence a restart forgets the key: the holder is told it lost the lease,
    while a newcomer can take it, so the lease is never silently held twice."""
    locks = RedisLocks(redis_client, owner="hosta", ttl=1.5)
    with locks.hold(["k"], operation="sync") as handle:
        redis_server.restart()
        with RedisLocks(redis_server.client(), owner="hostb").hold(["k"], operation="sync"):
            assert handle.lost.wait(2.0)
    assert locks.holder("k") is None


def test_redis_down_while_held_means_lost_within_the_ttl(
    redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    client = redis_server.client(socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    locks = RedisLocks(client, owner="hosta", ttl=1.0)
    try:
        with locks.hold(["k"], operation="sync") as handle:
            redis_server.stop()
            stopped = time.monotonic()
            assert handle.lost.wait(2.0)
            assert time.monotonic() - stopped < 1.0  # flagged before the lease could expire
        # Leaving with Redis down does not raise (the key expires by itself).
    finally:
        redis_server.start()


def test_redis_down_at_acquire_is_a_clear_host_unreachable() -> None:
    port = free_port()
    client = redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    locks = RedisLocks(client, owner="hosta")
    with pytest.raises(HostUnreachable) as info, locks.hold(["k"], operation="sync"):
        pass
    assert str(info.value).startswith(f"redis at localhost:{port} unreachable")
    assert info.value.retryable
    with pytest.raises(HostUnreachable):
        locks.holder("k")


class _watch_sets:
    """Record the keys of every SET seen by Redis MONITOR while the block runs."""

    def __init__(self, url: str, into: list[str]) -> None:
        self._client = redis.Redis.from_url(url)
        self._into = into
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._monitor_client = redis.Redis.from_url(url)

    def __enter__(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def __exit__(self, *exc: object) -> None:
        self._client.set("zrepq-test:monitor-stop", "1")
        self._thread.join(5)
        self._monitor_client.close()
        self._client.close()

    def _run(self) -> None:
        with self._monitor_client.monitor() as m:  # type: ignore[no-untyped-call]
            self._ready.set()
            for cmd in m.listen():
                words = str(cmd["command"]).split()
                if words[:2] == ["SET", "zrepq-test:monitor-stop"]:
                    return
                if words and words[0] == "SET":
                    self._into.append(words[1])
