"""Engine events as a task's progress: `PROGRESS` states and `task-progress` events.

Flower shows a task's state meta and its events as they arrive; `producer/watch.py` draws
bars from the state. Both are flat JSON: `{dataset, snapshot, base, dest, bytes_sent, total,
rate, eta, elapsed, resumed, stage}`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Task

from workers.engine.events import Event, Message, StreamFinished, StreamProgress, StreamStarted

# The engine's lines in the worker's log, under the handlers' name as they always were.
log = logging.getLogger("tasks.handlers")

_LOG_LEVEL = {"warning": logging.WARNING, "detail": logging.DEBUG}


class Progress:
    """Engine events → PROGRESS state + `task-progress` event, rate-limited.

    A stream that is over within `quiet` seconds publishes nothing: for the many empty
    incrementals of a `sync all`, the state and event writes (four Redis round trips) cost
    more than the stream itself, and the task's STARTED and SUCCESS states say it all. A
    longer stream shows up at its first progress tick (under a second in) and then about
    once a second, ending with stage "finishing". Messages go to the worker's log.
    """

    def __init__(self, task: Task[Any, Any], interval: float = 1.0, quiet: float = 0.5) -> None:
        self.task = task
        self.interval = interval
        self.quiet = quiet
        self._last = 0.0
        self._shown = False  # anything published for the current stream
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            log.log(_LOG_LEVEL.get(event.level, logging.INFO), "%s", event.text)
            return
        if isinstance(event, StreamStarted):
            self.meta = {
                "dataset": event.dataset,
                "snapshot": event.snapshot,
                "base": event.base,
                "dest": f"{event.dest_host}:{event.dest_fs}",
                "bytes_sent": 0,
                "total": event.total,
                "rate": 0.0,
                "eta": None,
                "elapsed": 0.0,
                "resumed": event.resumed,
                "stage": "sending",
            }
            self._shown = False
        elif isinstance(event, StreamProgress):
            self.meta.update(
                bytes_sent=event.bytes_sent,
                total=event.total,
                rate=round(event.rate, 1),
                eta=event.eta,
                elapsed=round(event.elapsed, 2),
            )
            if self._shown:
                self._publish()
            elif event.elapsed >= self.quiet:
                self._shown = True
                self._publish(force=True)
        elif isinstance(event, StreamFinished):
            self.meta.update(
                bytes_sent=event.bytes_sent, elapsed=round(event.elapsed, 2), stage="finishing"
            )
            if self._shown:
                self._publish(force=True)

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.interval:
                return
            self._last = now
        if self.task.request.id is None:  # called directly, not through the queue
            return
        meta = dict(self.meta)
        self.task.update_state(state="PROGRESS", meta=meta)
        self.task.send_event("task-progress", result=meta)
