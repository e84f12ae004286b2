"""How a failed task fails: one exception carrying the error record.

Celery sends an exception across the wire as its type name, module and args, and rebuilds it
on the caller. `TaskFailed` has exactly one JSON-able arg (the record), so it survives the trip
as itself (`exc.record`), and Flower shows its text.
"""

from __future__ import annotations

from typing import Any


class TaskFailed(Exception):
    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record)
        self.record = record

    def __str__(self) -> str:
        r = self.record
        where = ":".join(x for x in (r.get("host"), r.get("dataset")) if x)
        return f"{r.get('kind', 'error')}: {r.get('message', '')}" + (
            f" [{where}]" if where else ""
        )
