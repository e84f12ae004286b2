"""How far a stream is: bytes from `zfs send -v -P`'s stderr, and a smoothed rate."""

from __future__ import annotations

import math
import re

_RATE_TAU = 3.0  # seconds; time constant of the smoothed rate

# `zfs send -v -P` (OpenZFS): per-second "HH:MM:SS\t<bytes>[\t<blocks>]\t<snapshot>", after an
# estimate of "full\t<snap>\t<size>" / "incremental\t<from>\t<snap>\t<size>" lines and "size\t<n>".
_TICK_LINE = re.compile(r"^\d\d:\d\d:\d\d\t(\d+)(?:\t\d+)?\t(\S.*)$")
_ESTIMATE_LINE = re.compile(r"^(?:full|incremental)\t.*\t(\d+)$")
_SIZE_LINE = re.compile(r"^size\t(\d+)$")


class SendProgress:
    """Bytes sent so far, from `zfs send -v -P` stderr lines.

    OpenZFS counts bytes per snapshot, so an `-I` stream restarts at 0 with each snapshot;
    the count here carries the finished snapshots' bytes forward and never goes back.
    """

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.seen = False  # any per-second line yet
        self._estimated = 0
        self._finished = 0  # bytes of snapshots already done
        self._snapshot: str | None = None
        self._current = 0

    @property
    def bytes(self) -> int:
        return self._finished + self._current

    def feed(self, line: str) -> bool:
        """Take one stderr line; True when it was progress (not worth keeping for errors)."""
        m = _TICK_LINE.match(line)
        if m:
            self.seen = True
            nbytes, snapshot = int(m.group(1)), m.group(2)
            if snapshot != self._snapshot:
                self._finished += self._current
                self._snapshot, self._current = snapshot, 0
            self._current = max(self._current, nbytes)
            return True
        m = _SIZE_LINE.match(line)
        if m:
            if self.total is None:
                self.total = int(m.group(1))
            return True
        m = _ESTIMATE_LINE.match(line)
        if m:
            self._estimated += int(m.group(1))
            return True
        return False

    def estimated_total(self) -> int | None:
        return self.total if self.total is not None else (self._estimated or None)


class RateMeter:
    """Exponentially smoothed bytes/second, robust to irregular sample times."""

    def __init__(self, tau: float = _RATE_TAU) -> None:
        self._tau = tau
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, now: float, nbytes: int) -> float:
        if self._last is None:
            self._last = (now, nbytes)
            return self.rate
        then, before = self._last
        dt = now - then
        if dt <= 0:
            return self.rate
        instant = (nbytes - before) / dt
        weight = 1.0 - math.exp(-dt / self._tau)
        self.rate = instant if self.rate == 0.0 else self.rate + weight * (instant - self.rate)
        self._last = (now, nbytes)
        return self.rate
