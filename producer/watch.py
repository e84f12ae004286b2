"""Follow queued tasks to their end, drawing progress bars from their PROGRESS states."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from celery.result import AsyncResult
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tasks.errors import TaskFailed


def outcome(result: AsyncResult[Any]) -> dict[str, Any]:
    """The task's JSON record, failures included (a failed task carries its record)."""
    if result.successful():
        value = result.result
        return value if isinstance(value, dict) else {"ok": True, "result": value}
    exc = result.result
    if isinstance(exc, TaskFailed):
        return {"ok": False, "error": exc.record}
    return {
        "ok": False,
        "error": {"kind": "task", "message": f"{type(exc).__name__}: {exc}", "retryable": False},
    }


def wait(
    results: Mapping[str, AsyncResult[Any]],
    *,
    timeout: float | None = None,
    console: Console | None = None,
    show: bool = True,
    poll: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Wait for every result; a bar per task while its stream runs (when `show`)."""
    console = console or Console(stderr=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    bars: dict[str, TaskID] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    # Bars only on a terminal: piped or logged, rich would still end with a stray newline.
    show = show and console.is_terminal
    with Progress(*columns, console=console, disable=not show, transient=False) as progress:
        while len(done) < len(results):
            for key, res in results.items():
                if key in done:
                    continue
                if res.ready():
                    done[key] = outcome(res)
                    if key in bars:
                        progress.update(bars[key], completed=progress.tasks[bars[key]].total)
                    continue
                info = res.info if str(res.state) == "PROGRESS" else None
                if isinstance(info, dict) and "bytes_sent" in info:
                    label = f"{key} {info.get('snapshot') or info.get('dataset') or ''}"
                    if key not in bars:
                        bars[key] = progress.add_task(label, total=info.get("total") or None)
                    progress.update(
                        bars[key],
                        description=label,
                        completed=info.get("bytes_sent", 0),
                        total=info.get("total") or None,
                    )
            if len(done) == len(results):
                break
            if deadline is not None and time.monotonic() > deadline:
                for key in results:
                    done.setdefault(
                        key,
                        {
                            "ok": False,
                            "error": {
                                "kind": "timeout",
                                "retryable": True,
                                "message": f"no result within {timeout} s (is the worker for "
                                f"{key} running?)",
                            },
                        },
                    )
                break
            time.sleep(poll)
    return done
