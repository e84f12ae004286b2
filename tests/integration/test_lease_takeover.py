"""A lease whose holder on this host has provably ended is taken over at once (issue 12,
point 4), with real holder processes on a real redis-server.

Each holder is a separate Python process holding a lease through `RedisLocks` (TTL 30 s, so
an expiry can never pass for a takeover); it is SIGKILLed, left a zombie, or has its pid
given to a new process, and the next `hold` must take the lease in well under a second. A
holder that is alive, or whose death cannot be proved (another host, another boot, a token
without its identity), keeps the lease.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from tests.harness.clock import FakeClock
from tests.harness.netutil import REPO
from tests.harness.pids import spawn_with_pid
from workers.engine import liveness
from workers.engine.errors import LockHeld
from workers.engine.liveness import ProcessIdentity
from workers.engine.locks import LockToken
from workers.keys import lease_key
from workers.lease import _ACQUIRE, RedisLocks

pytestmark = pytest.mark.integration

KEY = "hosta:zrep:pool/fs"
TTL = 30.0

_HOLDER = """
import sys, time
import redis
from workers.lease import RedisLocks
client = redis.Redis.from_url(sys.argv[1])
locks = RedisLocks(client, owner=sys.argv[2], ttl=float(sys.argv[3]))
start_at = float(sys.argv[5])
while time.time() < start_at:
    time.sleep(0.001)
try:
    with locks.hold([sys.argv[4]], operation="sync") as handle:
        print("held", handle.token, flush=True)
        time.sleep(float(sys.argv[6]))
except Exception as e:
    print("refused", type(e).__name__, flush=True)
"""


def _holder(
    url: str, owner: str = "hosta", *, start_at: float = 0.0, keep: float = 600.0
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, owner, str(TTL), KEY, str(start_at), str(keep)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )


def _token_of(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    verdict, token = proc.stdout.readline().split()
    assert verdict == "held"
    return token


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    made: list[subprocess.Popen[str]] = []
    yield made
    for p in made:
        if p.poll() is None:
            p.kill()
        p.wait()


def _take(client: redis.Redis, owner: str = "hosta") -> tuple[float, str]:
    """Take the lease now (no waiting); return how long that took by the lease's (simulated)
    clock, which only moves when it waits, and the new token."""
    clock = FakeClock()
    locks = RedisLocks(client, owner=owner, ttl=TTL, clock=clock)
    t0 = clock.now
    with locks.hold([KEY], operation="sync") as handle:
        took = clock.now - t0
        assert client.get(lease_key(KEY)) == handle.token.encode()
        assert client.pttl(lease_key(KEY)) > (TTL - 2) * 1000  # a whole new TTL
        return took, handle.token


def test_a_sigkilled_holder_is_taken_over_at_once(
    redis_client: redis.Redis, redis_url: str, procs: list[subprocess.Popen[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    holder = _holder(redis_url)
    procs.append(holder)
    dead = _token_of(holder)
    parsed = LockToken.parse(dead)
    assert parsed is not None and parsed.pid == holder.pid and parsed.process is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert redis_client.get(lease_key(KEY)) == dead.encode()  # nobody released it
    with caplog.at_level(logging.WARNING, logger="workers.lease"):
        took, token = _take(redis_client)
    assert took < 0.5, f"took {took:.2f}s; the TTL is {TTL}s"
    assert token != dead
    assert f"its holder, pid {holder.pid} on hosta (sync)" in caplog.text


def test_a_zombie_holder_is_taken_over(
    redis_client: redis.Redis, redis_url: str, procs: list[subprocess.Popen[str]]
) -> None:
    holder = _holder(redis_url)
    procs.append(holder)
    _token_of(holder)
    os.kill(holder.pid, signal.SIGKILL)
    # Not reaped yet (we are its parent and do not wait): /proc still shows it, state Z.
    deadline = time.monotonic() + 5
    while (stat := liveness.read_stat(holder.pid)) is not None and not stat.exited:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stat is not None and stat.state == "Z"
    took, _ = _take(redis_client)
    assert took < 0.5


def test_a_holder_whose_pid_was_reused_is_taken_over(
    redis_client: redis.Redis, redis_url: str, procs: list[subprocess.Popen[str]]
) -> None:
    holder = _holder(redis_url)
    procs.append(holder)
    _token_of(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    reuser = spawn_with_pid(holder.pid, ["sleep", "60"])  # a real reuse, through ns_last_pid
    procs.append(reuser)
    assert liveness.read_stat(holder.pid) is not None  # the pid exists again...
    took, _ = _take(redis_client)  # ... but it is another process: its start time differs
    assert took < 0.5
    assert reuser.poll() is None


def test_a_holder_not_provably_gone_keeps_its_lease(
    redis_client: redis.Redis, redis_url: str, procs: list[subprocess.Popen[str]]
) -> None:
    live = _holder(redis_url)
    procs.append(live)
    token = _token_of(live)
    with pytest.raises(LockHeld) as info:
        _take(redis_client)
    assert info.value.holder == token
    assert f"is held by pid {live.pid} on hosta (sync) since " in info.value.message
    live.kill()
    live.wait()

    dead = subprocess.Popen(["true"])
    dead.wait()
    me = liveness.current_identity()
    assert me is not None
    ident = ProcessIdentity(me.boot, me.pidns, 1)
    refused = {
        "on another host": str(LockToken("hostb", dead.pid, "sync", "n", ident)),
        "without identity": str(LockToken("hosta", dead.pid, "sync", "n")),
        "from another boot": str(
            LockToken("hosta", dead.pid, "sync", "n", ProcessIdentity("old-boot", me.pidns, 1))
        ),
        "in another pid namespace": str(
            LockToken("hosta", dead.pid, "sync", "n", ProcessIdentity(me.boot, "1", 1))
        ),
        "not a zrepq token": "somebody else",
    }
    for why, value in refused.items():
        redis_client.set(lease_key(KEY), value, px=60_000)
        with pytest.raises(LockHeld):
            _take(redis_client)
        assert redis_client.get(lease_key(KEY)) == value.encode(), why
    # The same dead holder on this host, with its identity: taken over.
    redis_client.set(lease_key(KEY), str(LockToken("hosta", dead.pid, "sync", "n", ident)))
    assert _take(redis_client)[0] < 0.5
    # A refusal stands until the lease expires by itself (here: at 1.2 s by the clock).
    redis_client.set(lease_key(KEY), refused["on another host"])
    clock = FakeClock()
    t0 = clock.now
    clock.at(t0 + 1.2, lambda: redis_client.delete(lease_key(KEY)))
    locks = RedisLocks(redis_client, owner="hosta", ttl=TTL, clock=clock)
    with locks.hold([KEY], operation="sync", wait=5):
        assert 1.2 <= clock.now - t0 <= 1.2 + 0.1 + 1e-9  # taken at the first look after


def test_the_takeover_replaces_only_the_exact_dead_token(redis_client: redis.Redis) -> None:
    script = redis_client.register_script(_ACQUIRE)
    redis_client.set("k", "live-one")
    assert script(keys=["k"], args=["mine", 30_000, "dead-one"]) == [b"k", b"live-one"]
    assert redis_client.get("k") == b"live-one"
    redis_client.set("k", "dead-one")
    assert script(keys=["k"], args=["mine", 30_000, "dead-one"]) == 0
    assert redis_client.get("k") == b"mine" and redis_client.pttl("k") > 29_000


def test_of_many_contenders_for_a_dead_holder_exactly_one_wins(
    redis_client: redis.Redis, redis_url: str, procs: list[subprocess.Popen[str]]
) -> None:
    holder = _holder(redis_url)
    procs.append(holder)
    dead = _token_of(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    for rnd in range(3):
        # Eight processes released at the same instant, each trying once, the winner
        # keeping the lease until it is killed below, after every contender has answered
        # (a fixed keep let a contender that a loaded machine started late find it free).
        start_at = time.time() + 2.0
        contenders = [_holder(redis_url, start_at=start_at) for _ in range(8)]
        procs.extend(contenders)
        outcomes = []
        for c in contenders:
            assert c.stdout is not None
            outcomes.append(c.stdout.readline().split()[0])
        assert outcomes.count("held") == 1, (rnd, outcomes)
        assert outcomes.count("refused") == 7, (rnd, outcomes)
        winner = contenders[outcomes.index("held")]
        winner.kill()  # dies holding it: the next round takes it over from this one
        for c in contenders:
            c.wait()
        assert redis_client.get(lease_key(KEY)) != dead.encode()
        dead = redis_client.get(lease_key(KEY)).decode()
