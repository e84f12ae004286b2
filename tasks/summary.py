"""`zrep.sync_all`'s summary: one row per dataset, counted by status.

The members of a `sync all` return failure records instead of raising (`record_errors`), so
the chord's callback always gets every dataset's outcome.
"""

from __future__ import annotations

import time
from typing import Any

# Failures that are not failures of the pair: reported, but not as "failed".
_STATUS_OF_KIND = {"locked": "skipped", "duplicate": "skipped", "paused": "paused"}


def summary(results: list[dict[str, Any]], host: str, started: float) -> dict[str, Any]:
    rows = []
    for r in results:
        if r.get("ok"):
            res = r["result"]
            status = res.get("status", "synced")
            rows.append(
                {
                    "dataset": res.get("dataset") or r.get("dataset"),
                    "tag": r.get("tag"),
                    "status": status,
                    "snapshot": res.get("snapshot"),
                    "bytes": res.get("bytes_sent", 0),
                    "seconds": r.get("seconds", res.get("seconds", 0.0)),
                }
            )
        else:
            err = r.get("error", {})
            kind = err.get("kind")
            rows.append(
                {
                    "dataset": err.get("dataset") or r.get("dataset"),
                    "tag": r.get("tag"),
                    "status": _STATUS_OF_KIND.get(kind or "", "failed"),
                    "error": err.get("message"),
                    "kind": kind,
                    "bytes": 0,
                    "seconds": r.get("seconds", 0.0),
                }
            )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {
        "host": host,
        "datasets": rows,
        "counts": counts,
        "failed": counts.get("failed", 0),
        "bytes": sum(int(row["bytes"] or 0) for row in rows),
        "seconds": round(time.time() - started, 3),
    }
