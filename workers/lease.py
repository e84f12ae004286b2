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
(a dict of them, guarded by one lock): taking a lease registers it, giving it back
unregisters it, and neither starts, wakes or joins a thread in the common case. The threads
are daemons, started lazily by the first lease held in a process (so a child forked by the
Celery prefork pool starts its own instead of inheriting dead ones), and end after a while
without leases. The renewals of one `RedisLocks` are made one after another, so a call
hanging on a dead socket holds up the others too (the watchdog still flags each lease in
time): hence the client socket timeouts below ttl/3 that `RedisLocks` asks for.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from workers.engine.errors import HostUnreachable, LockHeld, LockLost
from workers.engine.locks import LockToken, describe_holder
from workers.keys import LOCK_PREFIX

log = logging.getLogger(__name__)

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
# The lease is treated as lost this long before it would expire by our clock, for clock-rate
# differences and the time the holder needs to notice.
_MARGIN_FRACTION = 0.1
_MARGIN_MAX = 1.0
# A renewal or watchdog thread with no lease to look after for this long ends (the next lease
# starts it again), so a `RedisLocks` that is no longer used does not keep threads forever.
_IDLE_EXIT = 30.0


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
        self._renewer = _Renewer(ttl, owner)
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
        locks, taken = self._acquire(names, token, time.monotonic() + wait)
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
                waited = max(0.0, deadline - time.monotonic())
                while True:
                    attempt = time.monotonic()
                    if lock.acquire(blocking=False, token=token):
                        break
                    if attempt >= deadline:
                        holder = self.holder(name)
                        note = f" (waited {waited:.0f}s)" if waited else ""
                        raise LockHeld(
                            f"lease {name} is held by {describe_holder(holder)}{note}",
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


class _Held:
    """One `hold()`: its locks and `lost` event, when to renew it, and until when it is valid.

    `renew_at` and `valid_until` (monotonic) change under the `_Renewer`'s lock; `expired()`
    reads them without it (a float attribute is read whole).
    """

    __slots__ = ("label", "locks", "lost", "released", "renew_at", "token", "valid_until")

    def __init__(
        self,
        token: str,
        locks: Sequence[Lock],
        lost: threading.Event,
        label: str,
        renew_at: float,
        valid_until: float,
    ) -> None:
        self.token = token
        self.locks = locks
        self.lost = lost
        self.label = label
        self.renew_at = renew_at
        self.valid_until = valid_until
        self.released = False

    def expired(self) -> bool:
        """Has the lease run out by the clock (and we still hold it, i.e. not released)?"""
        return not self.released and time.monotonic() >= self.valid_until

    def flagged(self) -> bool:
        """`lost` as set by a thread (the plain flag: not the clock check of `_LostEvent`)."""
        return threading.Event.is_set(self.lost)


# Guards the per-process reset of every `_Renewer`; replaced in a forked child, where it may
# have been inherited locked.
_FORK_GUARD = threading.Lock()


def _new_fork_guard() -> None:
    global _FORK_GUARD
    _FORK_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_new_fork_guard)


class _Renewer:
    """Keeps the leases of one `RedisLocks` alive; sets `lost` when that fails or can no
    longer be known to work.

    One renewal thread renews every held lease ttl/3 after its last renewal (or 1 s after a
    failed attempt, until the lease runs out); one watchdog thread sets `lost` on a lease once
    its TTL, less a margin, has passed since the start of its last successful (re)acquire.
    Each sleeps until its next deadline. A new lease's deadlines are later than those of the
    leases already held (same TTL), so registering one wakes a thread only when it had nothing
    to wait for; unregistering never does (the thread finds nothing due and sleeps on).
    """

    def __init__(self, ttl: float, owner: str) -> None:
        self._ttl = ttl
        self._interval = ttl / 3
        self._retry = min(self._interval, 1.0)
        self._margin = min(_MARGIN_MAX, ttl * _MARGIN_FRACTION)
        self._owner = owner
        self._pid = -1
        self._reset()

    def _reset(self) -> None:
        """Fresh state for this process: no leases, no threads, a lock nobody holds."""
        self._cond = threading.Condition(threading.Lock())
        self._held: dict[str, _Held] = {}
        self._renewing: threading.Thread | None = None
        self._watching: threading.Thread | None = None
        # When each thread will look again (inf: it waits until woken).
        self._renew_at = math.inf
        self._watch_at = math.inf
        self._pid = os.getpid()

    def _here(self) -> threading.Condition:
        """The lock of this process's state. After a fork the child starts with none of the
        parent's leases or threads (they did not survive the fork); its threads start when it
        first holds a lease."""
        if self._pid != os.getpid():
            with _FORK_GUARD:
                if self._pid != os.getpid():
                    self._reset()
        return self._cond

    def held(
        self, token: str, locks: Sequence[Lock], lost: threading.Event, label: str, since: float
    ) -> _Held:
        """A lease taken at `since` (monotonic: when the attempt that took it began)."""
        return _Held(
            token, locks, lost, label, since + self._interval, since + self._ttl - self._margin
        )

    def add(self, held: _Held) -> None:
        cond = self._here()
        with cond:
            self._held[held.token] = held
            wake = False
            if self._renewing is None or not self._renewing.is_alive():
                self._renewing = self._start(self._renew, "renew")
            elif held.renew_at < self._renew_at:
                wake = True
            if self._watching is None or not self._watching.is_alive():
                self._watching = self._start(self._watch, "watch")
            elif held.valid_until < self._watch_at:
                wake = True
            if wake:
                cond.notify_all()

    def remove(self, held: _Held) -> None:
        held.released = True
        with self._here():
            self._held.pop(held.token, None)

    def _start(self, target: Callable[[], None], what: str) -> threading.Thread:
        t = threading.Thread(target=target, name=f"lease-{what} {self._owner}", daemon=True)
        t.start()
        return t

    # ---- the threads (each runs with `_cond` held except around Redis calls and logging) --

    def _renew(self) -> None:
        cond = self._cond
        idle_since: float | None = None
        while True:
            with cond:
                now = time.monotonic()
                # A lease that ran out by the clock is not renewed: the watchdog sets `lost`.
                live = [h for h in self._held.values() if not h.released and not h.flagged()]
                due = [h for h in live if h.renew_at <= now and h.valid_until > now]
                if not due:
                    later = [h.renew_at for h in live if h.renew_at > now]
                    self._renew_at = min(later, default=math.inf)
                    done, idle_since = self._rest(
                        live, self._renew_at, idle_since, now, "_renewing"
                    )
                    if done:
                        return
                    continue
                idle_since = None
                self._renew_at = now  # busy; a new lease's deadline is later anyway
            for held in due:
                self._renew_one(cond, held)

    def _rest(
        self, live: list[_Held], wake_at: float, idle_since: float | None, now: float, slot: str
    ) -> tuple[bool, float | None]:
        """Nothing due (called with `_cond` held): wait until `wake_at`, a new lease, or at
        most _IDLE_EXIT. With no lease at all for _IDLE_EXIT, the thread ends: (True, ...),
        and gives up its `slot` (`_renewing`/`_watching`) so the next lease starts another.
        Returns (end, the new idle-since time)."""
        if live:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= _IDLE_EXIT:
            if getattr(self, slot) is threading.current_thread():
                setattr(self, slot, None)
            return True, idle_since
        self._cond.wait(min(wake_at - now, _IDLE_EXIT))
        return False, idle_since

    def _renew_one(self, cond: threading.Condition, held: _Held) -> None:
        began = time.monotonic()
        try:
            for lock in held.locks:
                lock.reacquire()
        except LockNotOwnedError:
            with cond:
                gone = held.released  # given back meanwhile: not a loss
            if not gone:
                log.error("lease %s is no longer ours (deleted, expired or taken)", held.label)
                held.lost.set()
            return
        except Exception as exc:  # the thread must not die over one lease; the watchdog decides
            if isinstance(exc, (LockError, redis.RedisError)):
                log.warning("could not renew lease %s: %s; retrying", held.label, exc)
            else:
                log.exception("could not renew lease %s; retrying", held.label)
            with cond:
                held.renew_at = time.monotonic() + self._retry
            return
        with cond:
            held.valid_until = began + self._ttl - self._margin
            held.renew_at = began + self._interval

    def _watch(self) -> None:
        cond = self._cond
        idle_since: float | None = None
        while True:
            with cond:
                now = time.monotonic()
                live = [h for h in self._held.values() if not h.released and not h.flagged()]
                ran_out = [h for h in live if h.valid_until <= now]
                if not ran_out:
                    self._watch_at = min((h.valid_until for h in live), default=math.inf)
                    done, idle_since = self._rest(
                        live, self._watch_at, idle_since, now, "_watching"
                    )
                    if done:
                        return
                    continue
                idle_since = None
                self._watch_at = now
            for held in ran_out:  # logged outside the lock
                if not held.released:
                    log.error("lease %s could not be renewed in time", held.label)
                    held.lost.set()


def _name(lock: Lock) -> str:
    name = lock.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
