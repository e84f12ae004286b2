"""What the whole fleet is doing: `zrepq status --fleet` and the data behind `zrepq metrics`.

Three sources, each cheap:
- the workers' `zrep.status` rows (the truth on disk: last sent snapshot and its time, paused,
  error flag, deliberate rollback), one task per registered host;
- the sync records the workers keep in Redis (`zrepq:syncs`: last success, bytes, failures,
  last error), see `tasks/ops.py`;
- the running tasks, from Celery's `inspect active` plus each one's PROGRESS state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from producer.api import Producer
from producer.watch import wait
from tasks import contract as c
from tasks.app import settings_of
from tasks.ops import read_records


def running_tasks(producer: Producer, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Tasks the workers are running now, with their progress."""
    insp = producer.app.control.inspect(timeout=timeout)
    active: Mapping[str, Any] = insp.active() or {}
    out = []
    for node, tasks in active.items():
        for t in tasks:
            if t.get("name") == c.PROBE_TASK:
                continue
            kwargs = t.get("kwargs") or {}
            row: dict[str, Any] = {
                "host": c.node_host(node),
                "task": t.get("name"),
                "id": t.get("id"),
                "dataset": kwargs.get("fs") if isinstance(kwargs, dict) else None,
                "started": t.get("time_start"),
            }
            res = producer.app.AsyncResult(str(t.get("id")))
            info = res.info if str(res.state) == "PROGRESS" else None
            if isinstance(info, dict):
                row["progress"] = {
                    k: info.get(k) for k in ("bytes_sent", "total", "rate", "eta", "snapshot")
                }
            out.append(row)
    return out


def queue_lengths(producer: Producer, hosts: list[str]) -> dict[str, int]:
    client = settings_of(producer.app).redis()
    return {h: int(client.llen(c.queue_name(h))) for h in hosts}


def alive_hosts(producer: Producer, timeout: float = 2.0) -> set[str]:
    replies = producer.app.control.ping(timeout=timeout) or []
    return {c.node_host(node) for r in replies for node in r}


def status_rows(
    producer: Producer, hosts: list[str], timeout: float = 30.0
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every host's `zrep.status` rows (masters), and the hosts that did not answer."""
    results = {}
    errors: dict[str, str] = {}
    for h in hosts:
        try:
            results[h] = producer.status(h, every_tag=True)
        except c.ZrepqError as e:
            errors[h] = str(e)
    done = wait(results, timeout=timeout, show=False) if results else {}
    rows: list[dict[str, Any]] = []
    for h, rec in done.items():
        if rec.get("ok"):
            for row in rec["result"].get("rows", []):
                rows.append({**row, "host": h})
        else:
            errors[h] = str((rec.get("error") or {}).get("message"))
    return rows, errors


def records(producer: Producer) -> list[dict[str, Any]]:
    return read_records(settings_of(producer.app).redis())


def fleet_status(producer: Producer, *, timeout: float = 30.0, tag: str = "zrep") -> dict[str, Any]:
    """The data of `zrepq status --fleet`, as JSON-able rows."""
    now = time.time()
    hosts = sorted(producer.hosts())
    alive = alive_hosts(producer)
    running = running_tasks(producer)
    rows, errors = status_rows(producer, [h for h in hosts if h in alive], timeout=timeout)
    # every tag's pairs (several standbys per dataset); `tag`: records without one
    recs = {(r.get("host"), r.get("dataset"), r.get("tag") or tag): r for r in records(producer)}
    queued = queue_lengths(producer, hosts)
    datasets = []
    for row in rows:
        key = (row["host"], row["dataset"], row.get("tag") or tag)
        rec = recs.get(key, {})
        run = next(
            (t for t in running if t["host"] == row["host"] and t["dataset"] == row["dataset"]),
            None,
        )
        sent = row.get("last_sent_time")
        if run is not None:
            state = "running"
        elif row.get("paused"):
            state = "paused"
        elif row.get("error") or rec.get("last_status") == "failed":
            state = "failed"
        else:
            state = "ok"
        datasets.append(
            {
                "host": row["host"],
                "dataset": row["dataset"],
                "tag": row.get("tag") or tag,
                "dest": f"{row.get('dest_host')}:{row.get('dest_fs')}",
                "master": row.get("master"),
                "last_sent": row.get("last_sent"),
                "last_sent_time": sent,
                "lag": round(now - sent, 1) if sent else None,
                "state": state,
                "running": run,
                "paused": row.get("paused"),
                "error": row.get("error") or (rec.get("last_error") if state == "failed" else None),
                "rolled_back": row.get("rolled_back"),
                "last_success": rec.get("last_success"),
                "last_bytes": rec.get("last_bytes"),
                "failures": rec.get("failures", 0),
            }
        )
    return {
        "time": now,
        "hosts": {
            h: {"alive": h in alive, "queued": queued.get(h, 0), "error": errors.get(h)}
            for h in hosts
        },
        "datasets": datasets,
        "running": running,
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def _size(n: float | None) -> str:
    if not n:
        return "0"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def fleet_text(data: dict[str, Any], flower_url: str | None = None) -> str:
    """`zrepl status`-like text: hosts, then one line per replicated dataset, then failures."""
    lines = ["HOSTS"]
    for h, info in data["hosts"].items():
        state = "up" if info["alive"] else "DOWN (no ping reply)"
        extra = f", {info['queued']} queued" if info.get("queued") else ""
        err = f", status failed: {info['error']}" if info.get("error") else ""
        lines.append(f"  {h:<16} {state}{extra}{err}")
    if not data["hosts"]:
        lines.append("  (no zrepq worker has registered)")
    lines.append("")
    header = f"  {'HOST':<12} {'DATASET':<32} {'DEST':<32} {'LAG':>7}  STATE"
    lines += ["DATASETS", header]
    failed = []
    for d in sorted(data["datasets"], key=lambda d: (d["host"], d["dataset"], d.get("tag", ""))):
        state = d["state"]
        if state == "running" and d["running"] and d["running"].get("progress"):
            p = d["running"]["progress"]
            done, total = p.get("bytes_sent") or 0, p.get("total") or 0
            pct = f" {100 * done / total:.0f}%" if total else ""
            state = f"running{pct} {_size(done)}/{_size(total)} at {_size(p.get('rate'))}/s"
        elif state == "paused":
            reason = (d.get("paused") or {}).get("reason")
            state = "paused" + (f" ({reason})" if reason else "")
        elif state == "failed":
            failed.append(d)
            state = "FAILED"
        lines.append(
            f"  {d['host']:<12} {d['dataset']:<32} {d['dest']:<32} {_age(d['lag']):>7}  {state}"
        )
    if not data["datasets"]:
        lines.append("  (none)")
    if failed:
        lines += ["", "LAST FAILURES"]
        for d in failed:
            error: dict[str, Any] = d.get("error") or {}
            when = error.get("time")
            ago = f" ({_age(data['time'] - when)} ago)" if isinstance(when, int | float) else ""
            lines.append(f"  {d['host']}:{d['dataset']}{ago}: {error.get('message')}")
            task = error.get("task")
            if task and flower_url:
                lines.append(f"    {flower_url}/task/{task}")
    others = [t for t in data["running"] if t["dataset"] is None]
    if others:
        lines += ["", "OTHER RUNNING TASKS"]
        lines += [f"  {t['host']:<12} {t['task']} {t['id']}" for t in others]
    return "\n".join(lines)


__all__ = ["fleet_status", "fleet_text", "records", "running_tasks", "status_rows"]
