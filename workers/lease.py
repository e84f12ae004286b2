"""Leases in Redis: redis-py's `Lock`, renewed from a thread, released on every path.

A lease is `SET key token NX PX ttl`; only the holder (same token) can renew or delete it,
through redis-py's Lua scripts. The token says who holds it: `owner:pid:operation:uuid`.

While held, a renewal thread resets the TTL every ttl/3. `handle.lost` is set, and stays
set, as soon as the lease cannot be trusted any more:
- a renewal finds the key gone or holding another token (deleted, stolen, expired, or Redis
  restarted without persistence: then the key is simply gone, so we never hold it twice);
- Redis stayed unreachable until the lease would have expired. A watchdog thread decides
  this, not the renewal thread, so a renewal call hanging on a dead socket cannot delay it.
The holder must stop when `lost` is set (the engine passes it as the stream's `cancel`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from workers.engine.errors import HostUnreachable, LockHeld, LockLost
from workers.keys import LOCK_PREFIX

log = logging.getLogger(__name__)

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
# The lease is treated as lost this long before it would expire by our clock, for clock-rate
# differences and the time the holder needs to notice.
_MARGIN_FRACTION = 0.1
_MARGIN_MAX = 1.0


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


class LeaseHandle:
    """`ports.LockHandle`: the token, the `lost` event, and `check()` for convenience."""

    def __init__(self, token: str, names: Sequence[str]) -> None:
        self._token = token
        self._lost = _LostEvent()
        self.names = tuple(names)

    @property
    def lost(self) -> threading.Event:
        return self._lost

    @property
    def token(self) -> str:
        return self._token

    def check(self) -> None:
        """Raise `LockLost` if the lease was lost."""
        if self._lost.is_set():
            raise LockLost(f"lost the lease on {', '.join(self.names)}")


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
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._client = client
        self._owner = owner
        self._ttl = ttl
        self._prefix = prefix

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
        token = f"{self._owner}:{os.getpid()}:{operation}:{uuid.uuid4().hex}"
        handle = LeaseHandle(token, names)
        locks, taken = self._acquire(names, token, time.monotonic() + wait)
        renewer = _Renewer(locks, self._ttl, handle.lost, ", ".join(names), taken)
        handle._lost._expired = renewer.expired
        renewer.start()
        try:
            yield handle
        finally:
            renewer.stop()
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
        try:
            for name in names:
                lock = Lock(
                    self._client,
                    self.key(name),
                    timeout=self._ttl,
                    sleep=0.1,
                    thread_local=False,  # renewed from another thread than the one acquiring
                    raise_on_release_error=True,
                )
                waited = max(0.0, deadline - time.monotonic())
                while True:
                    attempt = time.monotonic()
                    if lock.acquire(blocking=False, token=token):
                        break
                    if attempt >= deadline:
                        holder = self.holder(name)
                        note = f" (waited {waited:.0f}s)" if waited else ""
                        raise LockHeld(
                            f"lease {name} is held by {holder or 'someone else'}{note}",
                            holder=holder,
                        )
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                if taken is None:
                    taken = attempt
                locks.append(lock)
        except _REDIS_DOWN as exc:
            self._release(locks)
            raise self._unreachable(exc) from None
        except BaseException:
            self._release(locks)
            raise
        return locks, taken if taken is not None else time.monotonic()

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


class _Renewer:
    """Keeps leases alive; sets `lost` when that fails or can no longer be known to work."""

    def __init__(
        self, locks: Sequence[Lock], ttl: float, lost: threading.Event, label: str, since: float
    ) -> None:
        self._locks = locks
        self._ttl = ttl
        self._lost = lost
        self._label = label
        self._stopped = threading.Event()
        self._margin = min(_MARGIN_MAX, ttl * _MARGIN_FRACTION)
        # Valid until: the start of the last successful (re)acquire plus the TTL, less a margin.
        self._valid_until = since + ttl - self._margin
        self._mutex = threading.Lock()
        self._threads = [
            threading.Thread(target=self._renew, name=f"lease-renew {label}", daemon=True),
            threading.Thread(target=self._watch, name=f"lease-watch {label}", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopped.set()
        for t in self._threads:
            # A renewal stuck in a socket call is a daemon thread: do not wait for it.
            t.join(timeout=1.0)

    def expired(self) -> bool:
        """Has the lease run out by the clock (and we still hold it, i.e. not stopped)?"""
        with self._mutex:
            valid_until = self._valid_until
        return not self._stopped.is_set() and time.monotonic() >= valid_until

    def _renew(self) -> None:
        interval = self._ttl / 3
        retry = min(interval, 1.0)
        pause = interval
        while not self._stopped.wait(pause) and not self._lost.is_set():
            began = time.monotonic()
            try:
                for lock in self._locks:
                    lock.reacquire()
            except LockNotOwnedError:
                log.error("lease %s is no longer ours (deleted, expired or taken)", self._label)
                self._lose()
                return
            except (LockError, redis.RedisError) as exc:
                log.warning("could not renew lease %s: %s; retrying", self._label, exc)
                pause = retry
                continue
            with self._mutex:
                self._valid_until = began + self._ttl - self._margin
            pause = interval

    def _watch(self) -> None:
        while True:
            with self._mutex:
                remaining = self._valid_until - time.monotonic()
            if remaining <= 0:
                log.error("lease %s could not be renewed in time", self._label)
                self._lose()
                return
            if self._stopped.wait(remaining):
                return

    def _lose(self) -> None:
        if not self._stopped.is_set():
            self._lost.set()


def _name(lock: Lock) -> str:
    name = lock.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
