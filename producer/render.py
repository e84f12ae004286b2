"""The text `zrepq` prints for each task's result record (`--json` prints the record)."""

from __future__ import annotations

import json
from typing import Any


def default_text(key: str, result: Any) -> str:
    if isinstance(result, dict) and "dest_fs" in result and "status" not in result:
        return (
            f"{key}: initialized {result['snapshot']} -> {result['dest_host']}:"
            f"{result['dest_fs']} ({result['bytes_sent']} bytes)"
        )
    if isinstance(result, dict) and "status" in result:
        snap = result.get("snapshot") or ""
        extra = f" ({result['bytes_sent']} bytes)" if result.get("bytes_sent") else ""
        return f"{key}: {result['status']} {snap}{extra}".rstrip()
    if isinstance(result, dict) and "role" in result:
        return roles_text(result)
    return "" if result is None else f"{key}: {json.dumps(result, default=str)}"


def roles_text(result: dict[str, Any]) -> str:
    """failover/takeover: one line per host that changed (or found nothing to do), each
    labelled with its own host and dataset, in the order the halves ran."""
    sides = result.get("sides") or [
        {k: result.get(k) for k in ("host", "dataset", "role", "synced", "message")}
    ]
    out = []
    for side in sides:
        where = f"{side['host']}:{side['dataset']}"
        if side.get("message"):  # nothing changed there, and why ("... already standby")
            out.append(f"{where}: {side['message']}")
        elif side.get("synced"):
            out.append(f"{where}: now {side['role']} (after a final sync of {side['synced']})")
        else:
            out.append(f"{where}: now {side['role']}")
    return "\n".join(out)


def expire_text(results: Any) -> str:
    """zrep's lines for each fs expired: its own, then the far side's when it is master."""
    out = []
    for r in results if isinstance(results, list) else [results]:
        out.append(f"Expiring zrep snaps on {r['dataset']}")
        if r.get("remote_host"):
            out.append(f"Also running expire on {r['remote_host']}:{r.get('remote_fs')} now...")
            out.append(f"Expiring zrep snaps on {r.get('remote_fs')}")
    return "\n".join(out)


def summary_text(host: str, result: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result.get("counts", {}).items()))
    lines = [
        f"{host}: {counts or 'no master filesystems'}; {result.get('bytes', 0)} bytes "
        f"in {result.get('seconds', 0)} s"
    ]
    for row in result.get("datasets", []):
        tail = row.get("error") or row.get("snapshot") or ""
        lines.append(f"  {row['status']:<9} {row['dataset']:<40} {tail}")
    return "\n".join(lines)


def handback_text(target: str, r: dict[str, Any]) -> str:
    holds, props = len(r["released"]), len(r["properties"])
    done = [
        f"released {holds} hold{'' if holds == 1 else 's'}",
        f"removed {props} zrepq propert{'y' if props == 1 else 'ies'}",
    ]
    if r.get("bookmarks"):
        n = len(r["bookmarks"])
        done.append(f"destroyed {n} cursor bookmark{'' if n == 1 else 's'}")
    if r["aborted"]:
        done.append(f"aborted the partial receive on {', '.join(r['aborted'])}")
    return f"{target}: handed back to zrep ({'; '.join(done)})"


def schedule_line(d: dict[str, Any]) -> str:
    what = d["what"] + (f" {d['dataset']}" if d.get("dataset") else f" on {d['host']}")
    flags = {k: v for k, v in d["kwargs"].items() if k not in ("host", "fs", "tag") and v}
    extra = " " + " ".join(f"{k}={v}" for k, v in sorted(flags.items())) if flags else ""
    last = d.get("last_run_at") or "never"
    return (
        f"{d['name']:<20} {d['schedule']:<22} {what}{extra}  "
        f"(runs: {d['total_run_count']}, last: {last[:19]})"
    )


def clear_text(target: str, destroyed: list[str]) -> str:
    """zrep's `clear` lines, with what was destroyed."""
    return "\n".join(
        [f"Destroying any zrep-related snapshots from {target}"]
        + [f"  destroyed {snap}" for snap in destroyed]
        + [f"Removing zrep-related properties from {target}"]
    )
