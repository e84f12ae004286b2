"""Periodic `sync all`, `sync` and `expire`, kept in Redis by redbeat (`zrepq schedule ...`).

    add_schedule(app, "nightly", every="24h", verb="sync")                 every host's masters
    add_schedule(app, "a-prod", every="5m", verb="sync", host="hosta", fs="pool/prod")
    add_schedule(app, "a-expire", cron="0 * * * *", verb="expire", host="hosta")

An entry is stored as a redbeat entry under `zrepq:beat:<name>`; the scheduler
(`tasks.beat.ZrepqScheduler`) sends it to the host's queue when it is due. A message a host's
worker has not taken by the next run expires, so a host that is down does not collect a
backlog of syncs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from celery.schedules import crontab, schedule

from tasks import contract as c
from tasks.beat import FLEET_EXPIRE, FLEET_SYNC_ALL

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `6h`, `1d`, `1w` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise c.ValidationError(f"{text!r} is not a duration (write 30s, 15m, 6h, 1d)")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 1:
        raise c.ValidationError(f"{text!r}: the interval must be at least one second")
    return seconds


def parse_cron(text: str) -> crontab:
    """Five cron fields, `minute hour day-of-month month day-of-week` (UTC)."""
    fields = text.split()
    if len(fields) != 5:
        raise c.ValidationError(
            f"{text!r}: a cron schedule has 5 fields: minute hour day-of-month month day-of-week"
        )
    try:
        return crontab(*fields)
    except (ValueError, TypeError) as e:
        raise c.ValidationError(f"{text!r}: {e}") from None


def _entry_class(app: Celery) -> Any:
    from redbeat import RedBeatSchedulerEntry  # type: ignore[import-untyped]
    from redbeat.schedulers import ensure_conf  # type: ignore[import-untyped]

    ensure_conf(app)  # redbeat's settings on the app (key prefix, Redis)
    return RedBeatSchedulerEntry


def add_schedule(
    app: Celery,
    name: str,
    *,
    verb: str,
    every: str | None = None,
    cron: str | None = None,
    host: str | None = None,
    fs: str | None = None,
    tag: str = "zrep",
    flags: dict[str, Any] | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Create (or with `replace`, overwrite) schedule `name`; returns its description."""
    if not _NAME.match(name):
        raise c.ValidationError(
            f"schedule name {name!r}: letters, digits, '.', '_' and '-' only (up to 100)"
        )
    if (every is None) == (cron is None):
        raise c.ValidationError("give exactly one of --every DURATION or --cron 'M H DOM MON DOW'")
    if every is not None:
        seconds = parse_duration(every)
        sched: Any = schedule(run_every=timedelta(seconds=seconds))
    else:
        sched = parse_cron(str(cron))
        seconds = 3600.0
    flags = dict(flags or {})
    if verb == "sync":
        if fs:
            task, kwargs = c.SYNC, {"fs": fs, **flags}
        elif host:
            task, kwargs = c.SYNC_ALL, dict(flags)
        else:
            task, kwargs = FLEET_SYNC_ALL, dict(flags)
    elif verb == "expire":
        if flags:
            raise c.ValidationError(f"expire takes none of {', '.join(sorted(flags))}")
        task, kwargs = (c.EXPIRE, {"fs": fs} if fs else {}) if host else (FLEET_EXPIRE, {})
        if fs and not host:
            raise c.ValidationError("expire of one dataset needs its host (HOST:pool/fs)")
    else:
        raise c.ValidationError(f"cannot schedule {verb!r}: only sync and expire")
    if fs and not host:
        raise c.ValidationError(f"which host is {fs} on? write HOST:{fs}")
    kwargs["tag"] = tag
    options: dict[str, Any] = {"expires": max(1.0, seconds)}
    if host:
        kwargs["host"] = host
        options["queue"] = c.queue_for(host)
        c.validate(task, kwargs)  # the worker would refuse it anyway: say so now
    else:
        c.validate(c.SYNC_ALL if task == FLEET_SYNC_ALL else c.EXPIRE, {**kwargs, "host": "x"})
    Entry = _entry_class(app)
    key = Entry.generate_key(app, name) if hasattr(Entry, "generate_key") else None
    if not replace and key is not None:
        from redbeat.schedulers import get_redis

        if get_redis(app).exists(key):
            raise c.ValidationError(
                f"schedule {name!r} exists; remove it first or add with --replace"
            )
    entry = Entry(name, task, sched, kwargs=kwargs, options=options, app=app)
    entry.save()
    return describe(entry)


def _schedule_text(sched: Any) -> str:
    if isinstance(sched, crontab):
        fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        return "cron " + " ".join(str(getattr(sched, f"_orig_{f}", "*")) for f in fields)
    if isinstance(sched, schedule):
        secs = float(getattr(sched, "run_every").total_seconds())  # noqa: B009
        for unit in ("w", "d", "h", "m"):
            if secs >= _UNITS[unit] and secs % _UNITS[unit] == 0:
                return f"every {int(secs // _UNITS[unit])}{unit}"
        return f"every {secs:g}s"
    return str(sched)


def describe(entry: Any) -> dict[str, Any]:
    kwargs = dict(entry.kwargs or {})
    host = kwargs.get("host")
    target = kwargs.get("fs")
    what = {
        c.SYNC: "sync",
        c.SYNC_ALL: "sync all",
        FLEET_SYNC_ALL: "sync all",
        c.EXPIRE: "expire",
        FLEET_EXPIRE: "expire",
    }.get(entry.task, entry.task)
    last = entry.last_run_at
    due = entry.due_at
    return {
        "name": entry.name,
        "task": entry.task,
        "what": what,
        "host": host or "(every host)",
        "dataset": f"{host}:{target}" if target else None,
        "schedule": _schedule_text(entry.schedule),
        "kwargs": kwargs,
        "enabled": bool(entry.enabled),
        "last_run_at": last.isoformat() if isinstance(last, datetime) else None,
        "total_run_count": int(getattr(entry, "total_run_count", 0) or 0),
        "next_run_at": due.astimezone(UTC).isoformat() if isinstance(due, datetime) else None,
    }


def list_schedules(app: Celery) -> list[dict[str, Any]]:
    from redbeat.schedulers import get_redis

    Entry = _entry_class(app)
    client = get_redis(app)
    out = []
    for key in client.zrange(app.redbeat_conf.schedule_key, 0, -1):  # type: ignore[attr-defined]
        try:
            out.append(describe(Entry.from_key(key, app=app)))
        except KeyError:
            continue
    return sorted(out, key=lambda d: d["name"])


def remove_schedule(app: Celery, name: str) -> bool:
    Entry = _entry_class(app)
    key = Entry.generate_key(app, name)
    try:
        entry = Entry.from_key(key, app=app)
    except KeyError:
        return False
    entry.delete()
    return True
