"""One `zrepq` command's session: the producer and the global options, and its ending.

Every verb enqueues its tasks and hands them to `Ctx.finish`: without `--wait` it prints the
task ids and returns; with it, it waits (drawing progress bars), prints each result's text
(`producer/render.py`) or the JSON records, and exits 1 if any failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from celery.result import AsyncResult

from producer.render import default_text
from producer.watch import wait

if TYPE_CHECKING:
    from producer.api import Producer


@dataclass
class Ctx:
    producer: Producer
    host: str | None  # -H: the host whose worker runs the task
    wait: bool
    json: bool
    timeout: float | None

    def need_host(self) -> str:
        if not self.host:
            raise click.UsageError("which host? give -H HOST (or set ZREPQ_DEFAULT_HOST)")
        return self.host

    def each(
        self, targets: Sequence[str], send: Callable[[str], AsyncResult[Any]]
    ) -> dict[str, AsyncResult[Any]]:
        """One task per target; several are sent together (`Producer.batch`: one connection,
        pipelined)."""
        if len(targets) == 1:
            return {targets[0]: send(targets[0])}
        with self.producer.batch():
            return {t: send(t) for t in targets}

    def finish(
        self,
        results: dict[str, AsyncResult[Any]],
        render: Callable[[Any], str] | None = None,
        *,
        bars: bool = True,
    ) -> None:
        if not self.wait:
            for key, r in results.items():
                click.echo(
                    json.dumps({"target": key, "task_id": r.id})
                    if self.json
                    else f"{key}: queued as {r.id}"
                )
            return
        done = wait(results, timeout=self.timeout, show=bars and not self.json)
        failed = False
        for key, rec in done.items():
            if self.json:
                continue
            if rec.get("ok"):
                text = render(rec["result"]) if render else default_text(key, rec["result"])
                if text:
                    click.echo(text, nl=not text.endswith("\n"))
            else:
                failed = True
                err = rec.get("error", {})
                click.echo(f"Error: {key}: {err.get('message')}", err=True)
        if self.json:
            click.echo(json.dumps(done, indent=2, default=str))
            failed = any(not rec.get("ok") for rec in done.values())
        sys.exit(1 if failed else 0)
