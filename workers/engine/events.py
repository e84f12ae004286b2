"""Typed progress events the engine reports to one observer callable.

The Celery layer turns them into PROGRESS states and Flower events; a CLI prints them. An
observer that raises is logged and ignored: a broken display never breaks a replication.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["event"] = type(self).__name__
        return d


MessageLevel = Literal["info", "notice", "warning", "detail"]


@dataclass(frozen=True)
class Message(Event):
    """A line for the admin, with where it belongs (`level`):

    - "info": a line zrep prints on stdout, word for word ("Setting zrep properties on ...");
      a drop-in prints it on stdout, so scripts that compare zrep's output keep working;
    - "notice": zrepq's own line about something zrep does not do (a resumed receive, a
      completion recorded after a lost connection): stderr, so stdout stays zrep's;
    - "warning": something went wrong but the operation goes on (stderr);
    - "detail": zrepq's own chatter (the stream's size estimate): shown only with -v.

    `host` names the host whose command printed the line, when that is not this one (the far
    side's `takeover -L` during a failover); None means this host.
    """

    text: str
    dataset: str | None = None
    level: MessageLevel = "info"
    host: str | None = None


@dataclass(frozen=True)
class SnapshotCreated(Event):
    snapshot: str


@dataclass(frozen=True)
class StreamStarted(Event):
    dataset: str
    snapshot: str
    base: str | None  # None for a full stream
    dest_host: str
    dest_fs: str
    total: int | None
    resumed: bool = False


@dataclass(frozen=True)
class StreamProgress(Event):
    """A running stream's numbers, at least once a second while bytes flow.

    The transport measures them (`Transport.stream`'s `on_progress`) and knows nothing of
    datasets; the engine fills in `dataset` and `snapshot` before it passes the event on."""

    bytes_sent: int
    total: int | None  # the send's own estimate (`zfs send -P`), when it printed one
    rate: float  # bytes per second, smoothed
    elapsed: float  # seconds since the stream started
    dataset: str = ""
    snapshot: str = ""

    @property
    def eta(self) -> float | None:
        if not self.total or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.bytes_sent) / self.rate)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["eta"] = self.eta
        return d


@dataclass(frozen=True)
class StreamFinished(Event):
    dataset: str
    snapshot: str
    bytes_sent: int
    elapsed: float


@dataclass(frozen=True)
class SnapshotsExpired(Event):
    host: str
    dataset: str
    destroyed: tuple[str, ...]


Observer = Callable[[Event], None]


def null_observer(event: Event) -> None:
    """The default observer: drop everything."""


def safe_notify(observer: Observer, event: Event) -> None:
    try:
        observer(event)
    except Exception:  # a display problem must never fail a replication
        log.exception("observer failed on %s; continuing", type(event).__name__)
