"""Simulated time for the lease and its threads (`workers.clock.Clock`).

Time moves only when the test says (`advance`), or when the code under test sleeps (`sleep`
moves it by that much; `at(t, fn)` runs `fn` once time reaches `t`: a Redis key expiring, a
holder going away). A thread waiting on this clock sleeps until time reaches the end of its
wait, or until the code notifies it, exactly as with the real clock; `settle()` returns once
every thread started through this clock waits again for a moment still to come, i.e. has
done all it will do at the current time. Tests then assert what happened at which simulated
moment, however slow the machine is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Parked:
    cond: threading.Condition
    until: float  # when its wait ends
    woken: bool = False  # notified, not yet running again


class _Condition(threading.Condition):
    """A condition that tells the clock whom the code's notifications wake."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(threading.Lock())
        self._clock = clock
        self.ticking = False  # set while the clock itself notifies

    def notify(self, n: int = 1) -> None:  # notify_all calls it too
        if not self.ticking:
            self._clock._woken(self)  # (all its waiters: the renewer only notifies all)
        super().notify(n)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._seen: dict[threading.Thread, float] = {}  # the time each thread last read
        self._parked: dict[threading.Thread, _Parked] = {}
        self._timers: list[tuple[float, Callable[[], None]]] = []

    # ---- workers.clock.Clock -------------------------------------------------------------

    def monotonic(self) -> float:
        with self._lock:
            self._seen[threading.current_thread()] = self._now
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def condition(self) -> threading.Condition:
        return _Condition(self)

    def wait(self, cond: threading.Condition, timeout: float) -> None:
        me = threading.current_thread()
        with self._lock:
            # The wait began when the thread last read the time (it holds `cond` since).
            until = self._seen.get(me, self._now) + timeout
            if until <= self._now:
                return  # time moved on meanwhile: that moment has come
            parked = self._parked[me] = _Parked(cond, until)
        try:
            while True:
                cond.wait(60.0)  # notified by the code (a new lease), or by `advance`...
                with self._lock:
                    if parked.woken or parked.until <= self._now:
                        return  # ... for every waiter: only those whose wait is over go on
        finally:
            with self._lock:
                self._parked.pop(me, None)

    def start(self, target: Callable[[], None], name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()
        return t

    def _woken(self, cond: threading.Condition) -> None:
        with self._lock:
            for p in self._parked.values():
                if p.cond is cond:
                    p.woken = True

    # ---- the test's side -----------------------------------------------------------------

    @property
    def now(self) -> float:
        with self._lock:
            return self._now

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run `fn` (in the thread that moves the time) once time reaches `when`."""
        with self._lock:
            self._timers.append((when, fn))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            due = sorted((t for t in self._timers if t[0] <= self._now), key=lambda t: t[0])
            self._timers = [t for t in self._timers if t[0] > self._now]
            ended = {id(p.cond): p.cond for p in self._parked.values() if p.until <= self._now}
        for _, fn in due:
            fn()
        for cond in ended.values():  # the threads whose wait is over
            with cond:
                ticking, cond.ticking = getattr(cond, "ticking", False), True
                try:
                    cond.notify_all()
                finally:
                    cond.ticking = ticking

    def settle(self, timeout: float = 30.0) -> None:
        """Wait (real time) until every thread started here waits for a moment to come."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = [t.name for t in self._threads if t.is_alive() and not self._resting(t)]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"threads still busy at the simulated time: {busy}")
            time.sleep(0.001)

    def _resting(self, t: threading.Thread) -> bool:
        p = self._parked.get(t)
        return p is not None and not p.woken and p.until > self._now

    def run(self, seconds: float, step: float) -> None:
        """Move time by `seconds` in steps of `step`, settling after each."""
        end = self.now + seconds
        while self.now + step <= end + 1e-9:
            self.advance(step)
            self.settle()
        if end - self.now > 1e-9:
            self.advance(end - self.now)
            self.settle()
