"""The clock leases are kept by: monotonic time, waiting, and the threads that wait.

`RedisLocks` and its renewal threads read time, sleep and wait only through a `Clock`, so a
test can run them on simulated time (`tests/harness/clock.py`) and assert exactly when a
lease is renewed or declared lost, instead of sleeping and hoping the machine kept up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds, monotonic."""
        ...

    def sleep(self, seconds: float) -> None: ...

    def condition(self) -> threading.Condition:
        """A new condition for threads that `wait` on this clock."""
        ...

    def wait(self, cond: threading.Condition, timeout: float) -> None:
        """`cond.wait(timeout)`, called with `cond` held: returns when notified or when
        `timeout` has passed (or spuriously: callers look at the time again)."""
        ...

    def start(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start a daemon thread running `target` (its waits go through this clock)."""
        ...


class SystemClock:
    """The real one."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def condition(self) -> threading.Condition:
        return threading.Condition(threading.Lock())

    def wait(self, cond: threading.Condition, timeout: float) -> None:
        cond.wait(timeout)

    def start(self, target: Callable[[], None], name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        return t


SYSTEM_CLOCK = SystemClock()
