"""Time spent inside zfs commands, per unit of work, as the engine sees it.

`install()` wraps the exec layer's entry points (`LocalRunner.run`, `ParamikoRunner.run`,
`SshTransport.stream`) so that, between `start()` and `stop()` on the same thread, every
command's wall time is added up: a control command from the moment the runner is asked to
the moment it returns (process start or SSH channel, the command itself, the reply), a
stream from the start of the pipeline to its end. What a sync takes beyond that sum is the
engine's, the queue's and the lease's own time: the overhead the benchmarks report.

Benchmark-only: nothing in zrepq imports this.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_local = threading.local()
_installed = False


@dataclass
class Calls:
    commands: int = 0  # control commands (one zfs process each)
    streams: int = 0  # send | recv pipelines
    seconds: float = 0.0  # wall time inside both
    stream_seconds: float = 0.0  # of which inside streams
    remote: int = 0  # of the commands, those run on the other host (a paramiko channel)
    remote_seconds: float = 0.0  # and their wall time (channel round trip included)

    def to_dict(self) -> dict[str, Any]:
        return {
            "commands": self.commands,
            "streams": self.streams,
            "zfs_s": self.seconds,
            "stream_s": self.stream_seconds,
            "remote": self.remote,
            "remote_s": self.remote_seconds,
        }


def start() -> Calls:
    acc = Calls()
    _local.acc = acc
    return acc


def stop() -> Calls:
    acc: Calls = getattr(_local, "acc", None) or Calls()
    _local.acc = None
    return acc


def _timed(fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        acc: Calls | None = getattr(_local, "acc", None)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if acc is not None:
                dt = time.perf_counter() - t0
                acc.seconds += dt
                if kind == "stream":
                    acc.streams += 1
                    acc.stream_seconds += dt
                else:
                    acc.commands += 1
                    if kind == "remote":
                        acc.remote += 1
                        acc.remote_seconds += dt

    return wrapper


def install() -> None:
    global _installed
    if _installed:
        return
    from workers.exec.local import LocalRunner
    from workers.exec.remote import ParamikoRunner
    from workers.exec.transport import SshTransport

    LocalRunner.run = _timed(LocalRunner.run, "command")  # type: ignore[method-assign]
    ParamikoRunner.run = _timed(ParamikoRunner.run, "remote")  # type: ignore[method-assign]
    SshTransport.stream = _timed(SshTransport.stream, "stream")  # type: ignore[method-assign]
    _installed = True
