"""The Redis lease on a real redis-server, including its failure modes.

Renewal and expiry run on simulated time (`tests.harness.clock.FakeClock`): each test moves
the clock itself and asserts what the lease did at that moment. TTLs are long (Redis counts
them in real time, and a slow machine must not let a key expire under a test); the tests
that are about real time (a killed holder's key expiring in Redis) use the real clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from contextlib import ExitStack

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.harness.clock import FakeClock
from tests.harness.netutil import REPO, wait_until
from tests.harness.redis_server import RedisServer
from workers.engine.errors import LockHeld, LockLost
from workers.keys import LOCK_PREFIX, lease_key, lock_key
from workers.lease import RedisLocks
from workers.renewal import Renewer

TTL = 60.0  # renewed every 20 s, lost 59 s after the last renewal began (margin 1 s)

pytestmark = pytest.mark.integration


def test_hold_is_exclusive_and_names_its_holder(redis_client: redis.Redis) -> None:
    a = RedisLocks(redis_client, owner="hosta")
    b = RedisLocks(redis_client, owner="hostb")
    with a.hold(["hosta:zrep:pool/fs"], operation="sync") as handle:
        assert handle.token.startswith(f"hosta:{os.getpid()}:sync:")
        assert a.holder("hosta:zrep:pool/fs") == handle.token
        assert redis_client.get(lock_key("zrep", "hosta", "pool/fs")) == handle.token.encode()
        with pytest.raises(LockHeld) as info, b.hold(["hosta:zrep:pool/fs"], operation="failover"):
            pass
        assert info.value.holder == handle.token
        assert f"held by pid {os.getpid()} on hosta (sync) since " in str(info.value)
        assert "hosta:zrep:pool/fs" in str(info.value)
        assert info.value.retryable
        assert not handle.lost.is_set()
    assert a.holder("hosta:zrep:pool/fs") is None


def test_released_when_the_body_raises(redis_client: redis.Redis) -> None:
    locks = RedisLocks(redis_client, owner="hosta")
    with pytest.raises(RuntimeError), locks.hold(["k"], operation="sync"):
        raise RuntimeError("boom")
    assert locks.holder("k") is None


def test_leases_are_taken_all_at_once_or_none(redis_client: redis.Redis, redis_url: str) -> None:
    """One Lua script checks every key, then sets them all: nothing is written (and so
    nothing given back) when one of them is held, be it a key to take or one only checked."""
    locks = RedisLocks(redis_client, owner="hosta")
    other = RedisLocks(redis_client, owner="hostb")
    sets: list[str] = []
    for keys, check in ((["c", "b", "a"], []), (["c", "a"], ["b"])):
        with other.hold(["b"], operation="takeover") as theirs:
            with (
                _watch_sets(redis_url, sets),
                pytest.raises(LockHeld) as info,
                locks.hold(keys, operation="failover", check=check),
            ):
                pass
            assert info.value.holder == theirs.token
            assert sets == []  # not one SET, not even of "a", sorted before "b"
            assert locks.holder("a") is None and locks.holder("c") is None
            assert locks.holder("b") == theirs.token
    with _watch_sets(redis_url, sets), locks.hold(["c", "a"], operation="failover", check=["b"]):
        assert locks.holder("b") is None  # only checked: not taken
    # The monitor sees the script's SETs (so the empty list above means none happened).
    assert sorted(k.removeprefix(LOCK_PREFIX) for k in sets) == ["a", "c"]
    with locks.hold(["c", "b", "a"], operation="failover") as mine:
        assert {locks.holder(k) for k in "abc"} == {mine.token}


def test_a_checked_lease_held_by_the_same_operation_does_not_block(
    redis_client: redis.Redis,
) -> None:
    """The partner's lease held by another half of this very operation (the same task id:
    a failover and the takeover it hands over) lets it through; any other holder does not."""
    a = RedisLocks(redis_client, owner="hosta")
    b = RedisLocks(redis_client, owner="hostb")
    with b.hold(["hostb:zrep:pool/fs"], operation="takeover/T1") as theirs:
        with a.hold(["hosta:zrep:pool/fs"], operation="failover/T1", check=["hostb:zrep:pool/fs"]):
            assert a.holder("hostb:zrep:pool/fs") == theirs.token  # untouched
        for operation in ("failover/T2", "failover"):
            with (
                pytest.raises(LockHeld, match="lease hostb:zrep:pool/fs is held by pid"),
                a.hold(["hosta:zrep:pool/fs"], operation=operation, check=["hostb:zrep:pool/fs"]),
            ):
                pass
        assert a.holder("hosta:zrep:pool/fs") is None


def test_wait_for_a_lease_being_released(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="hosta", clock=clock)
    with ExitStack() as other:
        other.enter_context(RedisLocks(redis_client, owner="hostb").hold(["k"], operation="sync"))
        start = clock.now
        with pytest.raises(LockHeld) as info, locks.hold(["k"], operation="sync", wait=0.3):
            pass
        assert "waited" in str(info.value)
        assert clock.now - start == pytest.approx(0.3)  # polled until the wait was over
        clock.at(clock.now + 0.3, other.close)  # the other holder gives it back 0.3 s later
        start = clock.now
        with locks.hold(["k"], operation="sync", wait=3) as handle:
            assert locks.holder("k") == handle.token
            assert 0.3 - 1e-9 <= clock.now - start <= 0.3 + 0.1 + 1e-9  # at the next poll


def test_a_lease_taken_after_waiting_is_valid_for_a_whole_ttl(redis_client: redis.Redis) -> None:
    """The wait for a lapsing lease must not count against the new holder's TTL.

    Before: validity was measured from when *waiting* began, so a lease taken after waiting
    ~TTL was declared lost at once (a re-run after a killed worker failed with lock-lost).
    """
    clock = FakeClock()
    redis_client.set(lease_key("k"), "dead:1:sync/x:y")  # a holder that died...
    start = clock.now
    clock.at(start + 1.5, lambda: redis_client.delete(lease_key("k")))  # ...its key expires
    locks = RedisLocks(redis_client, owner="t", ttl=2.0, clock=clock)
    with locks.hold(["k"], operation="sync", wait=5.0) as handle:
        taken = clock.now
        assert 1.5 <= taken - start <= 1.6 + 1e-9
        clock.advance(start + 2.6 - clock.now)  # past start + ttl - margin (1.8 s)
        clock.settle()
        assert not handle.lost.is_set()  # valid until taken + 1.8 s, then renewed
        assert redis_client.get(lease_key("k")) == handle.token.encode()


def test_lost_reads_as_set_once_the_lease_ran_out_even_before_the_watchdog_runs(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process continued after SIGSTOP runs its main thread first: `lost` must already say
    so, without waiting for the watchdog thread to be scheduled."""
    monkeypatch.setattr(Renewer, "_renew", lambda self: None)  # no renewal,
    monkeypatch.setattr(Renewer, "_watch", lambda self: None)  # no watchdog
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="t", ttl=TTL, clock=clock)
    with locks.hold(["k"], operation="sync") as handle:
        clock.advance(TTL - 1.0 - 0.5)  # the margin is 1 s
        assert not handle.lost.is_set()
        clock.advance(0.5)
        assert handle.lost.is_set()
        with pytest.raises(LockLost, match="lost the lease"):
            handle.check()


def test_renewal_keeps_a_lease_past_its_ttl(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="hosta", ttl=TTL, clock=clock)
    key = LOCK_PREFIX + "k"
    with locks.hold(["k"], operation="sync") as handle:
        for _ in range(4):  # 80 s: past the TTL, renewed every ttl/3
            redis_client.pexpire(key, 3_600_000)  # a renewal sets it back to the TTL
            clock.advance(TTL / 3)
            clock.settle()
            assert 0 < redis_client.pttl(key) <= TTL * 1000
            assert locks.holder("k") == handle.token
            assert not handle.lost.is_set()
        handle.check()


_HOLDER = textwrap.dedent(
    """
    import sys, time, redis
    from workers.lease import RedisLocks
    locks = RedisLocks(redis.Redis.from_url(sys.argv[1]), owner="victim", ttl=2.0)
    with locks.hold(["k"], operation="sync") as handle:
        print(handle.token, flush=True)
        time.sleep(60)
    """
)


def test_a_sigkilled_holder_frees_the_key_within_the_ttl(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """Real processes and Redis's own expiry: the real clock."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, redis_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    locks = RedisLocks(redis_client, owner="hosta")
    try:
        assert proc.stdout is not None
        token = proc.stdout.readline().strip()
        # Past one TTL (2 s) it still holds: its renewal (every 0.67 s) works.
        assert not wait_until(lambda: locks.holder("k") != token, timeout=2.5, step=0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # Nobody renews it any more: Redis drops it within the TTL (its last renewal's PX).
    assert 0 < redis_client.pttl(LOCK_PREFIX + "k") <= 2000
    assert wait_until(lambda: locks.holder("k") is None, timeout=30)
    with locks.hold(["k"], operation="sync"):
        pass


@pytest.mark.parametrize("how", ["deleted", "stolen"])
def test_lost_is_set_when_the_key_is_taken_away(redis_client: redis.Redis, how: str) -> None:
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="hosta", ttl=TTL, clock=clock)
    with locks.hold(["k"], operation="sync") as handle:
        if how == "deleted":
            redis_client.delete(LOCK_PREFIX + "k")
        else:
            redis_client.set(LOCK_PREFIX + "k", "thief:1:sync:x")
        clock.advance(TTL / 3 - 0.5)
        clock.settle()
        assert not handle.lost.is_set()  # nobody looked yet
        clock.advance(0.5)  # the next renewal, ttl/3 after the lease was taken, finds out
        clock.settle()
        assert handle.lost.is_set()
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
    clock = FakeClock()
    locks = RedisLocks(redis_client, owner="hosta", ttl=TTL, clock=clock)
    with locks.hold(["k"], operation="sync") as handle:
        redis_server.restart()
        with RedisLocks(redis_server.client(), owner="hostb").hold(["k"], operation="sync"):
            clock.advance(TTL / 3)
            clock.settle()
            assert handle.lost.is_set()
    assert locks.holder("k") is None


def test_redis_down_while_held_means_lost_within_the_ttl(redis_server: RedisServer) -> None:
    client = redis_server.client(socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    clock = FakeClock()
    locks = RedisLocks(client, owner="hosta", ttl=TTL, clock=clock)
    try:
        with locks.hold(["k"], operation="sync") as handle:
            taken = clock.now
            redis_server.stop()
            # Renewals fail (retried every second) until the lease would have run out.
            clock.run(TTL - 1.0 - 0.5, step=0.5)
            assert not handle.lost.is_set()
            clock.run(0.5, step=0.5)
            assert handle.lost.is_set()
            assert clock.now - taken < TTL  # flagged before the lease could expire in Redis
        # Leaving with Redis down does not raise (the key expires by itself).
    finally:
        redis_server.start()


class _watch_sets:
    """Record the keys of every SET made while the block runs, by a command or inside a Lua
    script (Redis's keyspace notifications see both; MONITOR does not show a script's)."""

    def __init__(self, url: str, into: list[str]) -> None:
        self._client = redis.Redis.from_url(url)
        self._into = into
        self._pubsub = self._client.pubsub()

    def __enter__(self) -> None:
        self._client.config_set("notify-keyspace-events", "E$")
        self._pubsub.subscribe("__keyevent@0__:set")
        assert self._pubsub.get_message(timeout=5) is not None  # the subscription is active

    def __exit__(self, *exc: object) -> None:
        self._client.set("zrepq-test:watch-stop", "1")
        while (msg := self._pubsub.get_message(timeout=5)) is not None:
            key = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
            if key == "zrepq-test:watch-stop":
                break
            self._into.append(key)
        self._pubsub.close()
        self._client.config_set("notify-keyspace-events", "")
        self._client.close()
