"""Leases in Redis: taken in one Lua script, renewed from a thread, released on every path.

Each host's worker writes the leases of its own host's datasets only (`zrepq:lock:HOST:…`,
which its Redis ACL user may write); the lease of the partner's dataset is only *read*. A
`hold(keys, check=partner_keys)` is one script (`_ACQUIRE`): if none of `keys` is held and
none of `check` is held by another operation, set every key of `keys` to our token with the
TTL, else set nothing and name the holder. The partner's worker does the same the other way
round, and Redis runs scripts one at a time, so of two operations on the two sides of a pair
at most one gets through. Renewing and releasing use redis-py's `Lock` scripts (only the
holder's token can renew or delete its key). The token says who holds it
(`workers.engine.locks.LockToken`: `owner:pid:operation:uuid:boot=…:pidns=…:start=…:since=…`).

A lease whose holder has provably ended is taken over at once instead of after its TTL: when
the token names this host (`owner`), this boot and this pid namespace, and its pid is absent,
a zombie, or a process with another start time (reused). The takeover is a compare-and-set
(the next attempt passes that exact dead token to the script, which replaces the value only
while it is still that token), so of several contenders exactly one gets it. A holder on
another host, another boot or namespace, or with a token that does not carry its identity
(written before it did) is never taken over: the refusal stands until the lease expires.
See docs/reliability.md, "Dead holders". The partner's lease held by another half of this
very operation (same task id: a failover and the takeover it hands over) does not block.

While held, a lease is renewed every ttl/3. `handle.lost` is set, and stays set, as soon as
the lease cannot be trusted any more:
- a renewal finds the key gone or holding another token (deleted, stolen, expired, or Redis
  restarted without persistence: then the key is simply gone, so we never hold it twice);
- Redis stayed unreachable until the lease would have expired. A watchdog thread decides
  this, not the renewal thread, so a renewal call hanging on a dead socket cannot delay it;
  and `lost` also *reads* as set once that time has passed, before the watchdog has run.
The holder must stop when `lost` is set (the engine passes it as the stream's `cancel`).

Each `RedisLocks` has one renewal thread and one watchdog thread for all the leases it holds
(`workers.renewal`): taking a lease registers it, giving it back unregisters it, and neither
starts, wakes or joins a thread in the common case. The renewals of one `RedisLocks` are made
one after another, so a call hanging on a dead socket holds up the others too (the watchdog
still flags each lease in time): hence the client socket timeouts below ttl/3 that
`RedisLocks` asks for. Time is read through a `Clock` (`workers.clock`), so tests can run a
lease on simulated time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from workers.clock import SYSTEM_CLOCK, Clock
from workers.engine.errors import HostUnreachable, LockHeld
from workers.engine.locks import LockToken, blocks, describe_holder
from workers.handle import Handle
from workers.keys import LOCK_PREFIX
from workers.renewal import Renewer

log = logging.getLogger(__name__)

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


# Take every lease in KEYS at once, or none. KEYS: this host's leases (the worker's ACL user
# may write them). ARGV[1]: the token, ARGV[2]: the TTL in ms, ARGV[2 + i]: the value KEYS[i]
# may hold now ("" for none; a provably dead holder's token, which is then replaced), then
# pairs (key, the value it may hold) of leases only *read*: the partner's, which this user may
# read and not write. Those are passed as arguments, not declared in KEYS: Redis 7 asks for
# read *and* write permission on every key declared to EVAL/EVALSHA ("we cannot tell how the
# keys will be used"), while the commands inside the script are checked key by key against
# the user's ACL like any other (a GET on a read-only key passes, a SET on it is refused).
# Returns 0 when taken, else {the key in the way, its value}.
_ACQUIRE = """
local n = #KEYS
for i = 1, n do
    local v = redis.call('get', KEYS[i])
    if v and v ~= ARGV[2 + i] then return {KEYS[i], v} end
end
for j = n + 3, #ARGV, 2 do
    local v = redis.call('get', ARGV[j])
    if v and v ~= ARGV[j + 1] then return {ARGV[j], v} end
end
for i = 1, n do
    redis.call('set', KEYS[i], ARGV[1], 'px', ARGV[2])
end
return 0
"""


class _LostEvent(threading.Event):
    """`handle.lost`: set by the renewal and watchdog threads, and also *reads* as set as soon
    as the lease has run out by the clock, before the watchdog thread has had a chance to run.

    That matters for a process that was paused (SIGSTOP, a frozen VM) past its lease: when it
    is continued, its main thread may run before the watchdog does, and must not take one more
    step as if it still held the lease.
    """

    def __init__(self) -> None:
        super().__init__()
        self._expired: Callable[[], bool] | None = None

    def is_set(self) -> bool:
        if super().is_set():
            return True
        expired = self._expired
        if expired is not None and expired():
            self.set()
            return True
        return False


class LeaseHandle(Handle):
    """`ports.LockHandle` of a lease: `lost` is a `_LostEvent`, `check()` raises if set."""

    # A lease alone is invisible to a `zrepq-local` of this host (its lock files): unless
    # `filelock.LeaseAndFile` took those too, zrep's marks must stand in for them.
    host_excluded = False

    def __init__(self, token: str, names: Sequence[str]) -> None:
        super().__init__(token, names, _LostEvent())
        self._lost: _LostEvent


class RedisLocks:
    """`ports.Locks` on one Redis server.

    `owner` names the holder in tokens (this host's zrep name or the worker's name). Give the
    client socket timeouts below ttl/3 so a dead Redis is noticed quickly (redis-py's default
    of 5 s is fine for the default ttl of 60 s).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        owner: str,
        ttl: float = 60.0,
        prefix: str = LOCK_PREFIX,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._client = client
        self._owner = owner
        self._ttl = ttl
        self._prefix = prefix
        self._clock = clock
        self._renewer = Renewer(ttl, owner, clock)
        self._take = client.register_script(_ACQUIRE)

    @property
    def ttl(self) -> float:
        """Seconds a lease lives without renewal (the longest a dead holder keeps it)."""
        return self._ttl

    def key(self, name: str) -> str:
        return self._prefix + name

    @contextmanager
    def hold(
        self,
        keys: Sequence[str],
        *,
        operation: str,
        wait: float = 0.0,
        check: Sequence[str] = (),
    ) -> Iterator[LeaseHandle]:
        """Take every lease in `keys`, after checking that none in `check` is held by another
        operation (`locks.blocks`), in one atomic step; or raise `LockHeld` naming the holder.

        `keys` are this host's datasets' leases, `check` the partner's, which this host's
        worker reads and never writes: the partner's worker takes those, checking ours the
        same way, and as each check-and-take is one Lua script, Redis runs them one after the
        other, so at most one of the two succeeds. `wait` is the total time to wait for
        leases held by others. Nothing is taken before a refusal.
        """
        names = sorted(set(keys))
        checked = sorted(set(check) - set(names))
        pid = os.getpid()
        token = str(LockToken.new(self._owner, operation))
        handle = LeaseHandle(token, names)
        locks, taken = self._acquire(names, checked, token, operation, wait)
        held = self._renewer.held(token, locks, handle._lost, ", ".join(names), taken)
        try:
            handle._lost._expired = held.expired
            self._renewer.add(held)
            yield handle
        finally:
            self._renewer.remove(held)
            # A child forked inside the block and leaving it must not delete the parent's lease.
            if os.getpid() == pid:
                self._release(locks)

    def holder(self, key: str) -> str | None:
        """Token of the current holder of lease `key`, or None when it is free."""
        try:
            value = self._client.get(self.key(key))
        except _REDIS_DOWN as exc:
            raise self._unreachable(exc) from None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def _acquire(
        self,
        names: Sequence[str],
        checked: Sequence[str],
        token: str,
        operation: str,
        wait: float,
    ) -> tuple[list[Lock], float]:
        """The locks, and when the attempt that took them began (monotonic).

        The leases are valid from that moment, not from when waiting for them began: a lease
        taken after waiting must not count the wait against its TTL. A lease of ours held by
        a provably dead holder (`LockToken.gone`), or one of the partner's held by another
        half of this very operation, is let through at once: the next attempt passes that
        exact value, so the script takes (or ignores) it only while it is still that value.
        """
        clock = self._clock
        deadline = clock.monotonic() + wait
        ms = int(self._ttl * 1000)
        allowed: dict[str, str] = {}
        try:
            while True:
                attempt = clock.monotonic()
                args: list[str | int] = [token, ms]
                args += [allowed.get(self.key(n), "") for n in names]
                for n in checked:
                    args += [self.key(n), allowed.get(self.key(n), "")]
                blocked = self._take(keys=[self.key(n) for n in names], args=args)
                if not blocked:
                    break
                key, held = (_text(v) for v in blocked)
                if allowed.get(key) != held and self._let_through(key, held, names, operation):
                    allowed[key] = held
                    continue
                if attempt >= deadline:
                    name = key.removeprefix(self._prefix)
                    note = f" (waited {wait:.0f}s)" if wait else ""
                    raise LockHeld(
                        f"lease {name} is held by {describe_holder(held)}{note}", holder=held
                    )
                clock.sleep(min(0.1, max(0.0, deadline - clock.monotonic())))
        except _REDIS_DOWN as exc:
            raise self._unreachable(exc) from None
        for key, held in allowed.items():
            if key.removeprefix(self._prefix) in names:
                dead = LockToken.parse(held)
                gone = dead.describe() if dead is not None else held
                log.warning("took over lease %s at once: its holder, %s, has ended", key, gone)
        locks = []
        encoded = token.encode()  # as redis-py's `Lock.acquire` keeps it
        for n in names:
            lock = Lock(
                self._client,
                self.key(n),
                timeout=self._ttl,
                thread_local=False,  # renewed from another thread than the one acquiring
                raise_on_release_error=True,
            )
            lock.local.token = encoded
            locks.append(lock)
        return locks, attempt

    def _let_through(self, key: str, held: str, names: Sequence[str], operation: str) -> bool:
        if key.removeprefix(self._prefix) in names:  # ours: taken over if its holder ended
            dead = LockToken.parse(held)
            return dead is not None and dead.gone(self._owner)
        return not blocks(held, operation)  # the partner's: another half of this operation

    def _release(self, locks: Sequence[Lock]) -> None:
        for lock in reversed(locks):
            try:
                lock.release()
            except LockNotOwnedError:
                log.warning("lease %s was no longer ours when released", _name(lock))
            except (LockError, *_REDIS_DOWN) as exc:
                log.warning(
                    "could not release lease %s (%s); it expires within %ss",
                    _name(lock),
                    exc,
                    self._ttl,
                )

    def _unreachable(self, exc: Exception) -> HostUnreachable:
        retryable = not isinstance(exc, redis.AuthenticationError)
        return HostUnreachable(
            f"redis at {_address(self._client)} unreachable: {exc}", retryable=retryable
        )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _name(lock: Lock) -> str:
    name = lock.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
