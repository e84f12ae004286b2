"""Leases in Redis: redis-py's `Lock`, renewed from a thread, released on every path.

A lease is `SET key token NX PX ttl`; only the holder (same token) can renew or delete it,
through redis-py's Lua scripts. The token says who holds it (`workers.engine.locks.LockToken`:
`owner:pid:operation:uuid:boot=…:pidns=…:start=…:since=…`).

A lease whose holder has provably ended is taken over at once instead of after its TTL: when
the token names this host (`owner`), this boot and this pid namespace, and its pid is absent,
a zombie, or a process with another start time (reused). The takeover is one compare-and-set
(a Lua script: replace the value only if it is still that exact dead token), so of several
contenders exactly one gets it. A holder on another host, another boot or namespace, or with a
token that does not carry its identity (written before it did) is never taken over: the
refusal stands until the lease expires. See docs/reliability.md, "Dead holders".

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
from redis.commands.core import Script
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from workers.clock import SYSTEM_CLOCK, Clock
from workers.engine.errors import HostUnreachable, LockHeld
from workers.engine.locks import LockToken, describe_holder
from workers.handle import Handle
from workers.keys import LOCK_PREFIX
from workers.renewal import Renewer

log = logging.getLogger(__name__)

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


# Replace the lease's value only if it is still exactly the dead holder's token.
_TAKE_OVER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3])
    return 1
end
return 0
"""


class _Lease(Lock):
    """redis-py's `Lock`, which also takes the lease over from a provably dead holder."""

    def __init__(self, *args: Any, host: str, take_over: Script, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host = host
        self._take_over = take_over
        self.taken_from: str | None = None

    def do_acquire(self, token: str) -> bool:
        if super().do_acquire(token):
            return True
        raw = self.redis.get(self.name)
        if raw is None:
            return False  # just freed: the next attempt takes it
        held = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        dead = LockToken.parse(held)
        if dead is None or not dead.gone(self._host):
            return False
        ms = int(self.timeout * 1000) if self.timeout else 0
        if not self._take_over(keys=[self.name], args=[raw, token, ms], client=self.redis):
            return False  # someone else changed it first
        self.taken_from = held
        log.warning(
            "took over lease %s at once: its holder, %s, has ended",
            _name(self),
            dead.describe(),
        )
        return True


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
        self._take_over = client.register_script(_TAKE_OVER)

    @property
    def ttl(self) -> float:
        """Seconds a lease lives without renewal (the longest a dead holder keeps it)."""
        return self._ttl

    def key(self, name: str) -> str:
        return self._prefix + name

    @contextmanager
    def hold(
        self, keys: Sequence[str], *, operation: str, wait: float = 0.0
    ) -> Iterator[LeaseHandle]:
        """Take every lease in `keys`, in sorted order, or raise `LockHeld` naming the holder.

        `wait` is the total time to wait for leases held by others. Leases taken before a
        failure are given back at once.
        """
        names = sorted(set(keys))
        pid = os.getpid()
        token = str(LockToken.new(self._owner, operation))
        handle = LeaseHandle(token, names)
        locks, taken = self._acquire(names, token, self._clock.monotonic() + wait)
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
        self, names: Sequence[str], token: str, deadline: float
    ) -> tuple[list[Lock], float]:
        """The locks, and when the attempt that took the first of them began (monotonic).

        The leases are valid from that moment, not from when waiting for them began: a lease
        taken after waiting must not count the wait against its TTL.
        """
        locks: list[Lock] = []
        taken: float | None = None
        clock = self._clock
        try:
            for name in names:
                lock = _Lease(
                    self._client,
                    self.key(name),
                    timeout=self._ttl,
                    sleep=0.1,
                    thread_local=False,  # renewed from another thread than the one acquiring
                    raise_on_release_error=True,
                    host=self._owner,
                    take_over=self._take_over,
                )
                waited = max(0.0, deadline - clock.monotonic())
                while True:
                    attempt = clock.monotonic()
                    if lock.acquire(blocking=False, token=token):
                        break
                    if attempt >= deadline:
                        holder = self.holder(name)
                        note = f" (waited {waited:.0f}s)" if waited else ""
                        raise LockHeld(
                            f"lease {name} is held by {describe_holder(holder)}{note}",
                            holder=holder,
                        )
                    clock.sleep(min(0.1, max(0.0, deadline - clock.monotonic())))
                if taken is None:
                    taken = attempt
                locks.append(lock)
        except _REDIS_DOWN as exc:
            self._release(locks)
            raise self._unreachable(exc) from None
        except BaseException:
            self._release(locks)
            raise
        return locks, taken if taken is not None else clock.monotonic()

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


def _name(lock: Lock) -> str:
    name = lock.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
