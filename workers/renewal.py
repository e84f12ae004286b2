"""Keeping leases alive: one renewal thread and one watchdog thread per `RedisLocks`.

The renewal thread renews every held lease ttl/3 after its last renewal (or 1 s after a
failed attempt, until the lease runs out); the watchdog sets `lost` on a lease once its TTL,
less a margin, has passed since the start of its last successful (re)acquire. Each sleeps
until its next deadline. A new lease's deadlines are later than those of the leases already
held (same TTL), so registering one wakes a thread only when it had nothing to wait for;
unregistering never does (the thread finds nothing due and sleeps on).

The threads are daemons, started lazily by the first lease held in a process (so a child
forked by the Celery prefork pool starts its own instead of inheriting dead ones), and end
after `IDLE_EXIT` seconds without leases. They tell time and wait through a `Clock`
(`workers.clock`), so tests run them on simulated time.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.exceptions import LockError, LockNotOwnedError

from workers.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("workers.lease")

# The lease is treated as lost this long before it would expire by our clock, for clock-rate
# differences and the time the holder needs to notice.
MARGIN_FRACTION = 0.1
MARGIN_MAX = 1.0
# A renewal or watchdog thread with no lease to look after for this long ends (the next lease
# starts it again), so a `RedisLocks` that is no longer used does not keep threads forever.
IDLE_EXIT = 30.0


class Renewable(Protocol):
    """A lease's lock: `reacquire` resets its TTL, or raises `LockNotOwnedError`."""

    def reacquire(self) -> bool: ...


@dataclass(slots=True, eq=False)
class Held:
    """One `hold()`: its locks and `lost` event, when to renew it, and until when it is valid.

    `renew_at` and `valid_until` (monotonic, by the renewer's clock) change under the
    `Renewer`'s lock; `expired()` reads them without it (a float attribute is read whole).
    """

    token: str
    locks: Sequence[Renewable]
    lost: threading.Event
    label: str
    renew_at: float
    valid_until: float
    clock: Clock
    released: bool = False

    def expired(self) -> bool:
        """Has the lease run out by the clock (and we still hold it, i.e. not released)?"""
        return not self.released and self.clock.monotonic() >= self.valid_until

    def flagged(self) -> bool:
        """`lost` as set by a thread (the plain flag: not the clock check of `_LostEvent`)."""
        return threading.Event.is_set(self.lost)


# Guards the per-process reset of every `Renewer`; replaced in a forked child, where it may
# have been inherited locked.
_FORK_GUARD = threading.Lock()


def _new_fork_guard() -> None:
    global _FORK_GUARD
    _FORK_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_new_fork_guard)


class Renewer:
    """Keeps the leases of one `RedisLocks` alive; sets `lost` when that fails or can no
    longer be known to work (see the module docstring)."""

    def __init__(self, ttl: float, owner: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._ttl = ttl
        self._interval = ttl / 3
        self._retry = min(self._interval, 1.0)
        self._margin = min(MARGIN_MAX, ttl * MARGIN_FRACTION)
        self._owner = owner
        self._clock = clock
        self._pid = -1
        self._reset()

    def _reset(self) -> None:
        """Fresh state for this process: no leases, no threads, a lock nobody holds."""
        self._cond = self._clock.condition()
        self._held: dict[str, Held] = {}
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
        self,
        token: str,
        locks: Sequence[Renewable],
        lost: threading.Event,
        label: str,
        since: float,
    ) -> Held:
        """A lease taken at `since` (monotonic: when the attempt that took it began)."""
        renew_at, valid_until = since + self._interval, since + self._ttl - self._margin
        return Held(token, locks, lost, label, renew_at, valid_until, self._clock)

    def add(self, held: Held) -> None:
        cond = self._here()
        with cond:
            self._held[held.token] = held
            wake = False
            if self._renewing is None or not self._renewing.is_alive():
                self._renewing = self._clock.start(self._renew, f"lease-renew {self._owner}")
            elif held.renew_at < self._renew_at:
                wake = True
            if self._watching is None or not self._watching.is_alive():
                self._watching = self._clock.start(self._watch, f"lease-watch {self._owner}")
            elif held.valid_until < self._watch_at:
                wake = True
            if wake:
                cond.notify_all()

    def remove(self, held: Held) -> None:
        held.released = True
        with self._here():
            self._held.pop(held.token, None)

    # ---- the threads (each runs with `_cond` held except around Redis calls and logging) --

    def _renew(self) -> None:
        def due(h: Held, now: float) -> bool:
            # A lease that ran out by the clock is not renewed: the watchdog sets `lost`.
            return h.renew_at <= now < h.valid_until

        self._run("_renewing", "_renew_at", due, lambda h: h.renew_at, self._renew_one)

    def _watch(self) -> None:
        self._run(
            "_watching",
            "_watch_at",
            lambda h, now: h.valid_until <= now,
            lambda h: h.valid_until,
            self._flag_lost,
        )

    def _run(
        self,
        slot: str,
        wake_slot: str,
        due: Callable[[Held, float], bool],
        deadline: Callable[[Held], float],
        act: Callable[[Held], None],
    ) -> None:
        """A thread's loop: act on the leases that are `due`, else sleep until the next
        `deadline` of a live lease (`wake_slot` says when, for `add`), a new lease, or at most
        IDLE_EXIT. With no lease at all for IDLE_EXIT the thread ends, giving up its `slot`
        (`_renewing`/`_watching`) so the next lease starts another."""
        cond, clock = self._cond, self._clock
        idle_since: float | None = None
        while True:
            with cond:
                now = clock.monotonic()
                live = [h for h in self._held.values() if not h.released and not h.flagged()]
                ready = [h for h in live if due(h, now)]
                if not ready:
                    wake_at = min((t for h in live if (t := deadline(h)) > now), default=math.inf)
                    setattr(self, wake_slot, wake_at)
                    if live:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = now
                    elif now - idle_since >= IDLE_EXIT:
                        if getattr(self, slot) is threading.current_thread():
                            setattr(self, slot, None)
                        return
                    clock.wait(cond, min(wake_at - now, IDLE_EXIT))
                    continue
                idle_since = None
                setattr(self, wake_slot, now)  # busy; a new lease's deadline is later anyway
            for held in ready:  # outside the lock: Redis calls, logging
                act(held)

    def _renew_one(self, held: Held) -> None:
        cond, clock = self._cond, self._clock
        began = clock.monotonic()
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
                held.renew_at = clock.monotonic() + self._retry
            return
        with cond:
            held.valid_until = began + self._ttl - self._margin
            held.renew_at = began + self._interval

    def _flag_lost(self, held: Held) -> None:
        if not held.released:
            log.error("lease %s could not be renewed in time", held.label)
            held.lost.set()
