"""The scheduler: celery beat with redbeat, so the schedule lives in Redis.

Run it as `zrepq scheduler` (which is `celery -A tasks.app beat -S tasks.beat:ZrepqScheduler`).
Any number may run: redbeat holds a lock in Redis (`zrepq:beat::lock`: `[scheduler]
key_prefix`), one scheduler sends and the others wait; when the active one dies its lock
expires (`[scheduler] lock_timeout`) and a standby takes over. Entries are managed with
`zrepq schedule add|list|remove`.

Entries name a real task (`zrep.sync_all` on one host's queue, `zrep.sync` for one dataset,
`zrep.expire`) or a fleet entry (`zrepq.fleet.sync_all`, `zrepq.fleet.expire`), which this
scheduler expands when it fires into one task per registered host, so a host added later is
covered without touching the schedule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from redbeat import RedBeatScheduler  # type: ignore[import-untyped]

from tasks import contract as c
from tasks.registry import registered
from workers.main import celery_argv

log = logging.getLogger(__name__)

FLEET_SYNC_ALL = "zrepq.fleet.sync_all"
FLEET_EXPIRE = "zrepq.fleet.expire"
FLEET_TASKS = {FLEET_SYNC_ALL: c.SYNC_ALL, FLEET_EXPIRE: c.EXPIRE}


def scheduler_argv(loglevel: str, extra: Sequence[str] = ()) -> list[str]:
    """The scheduler process: celery beat with zrepq's redbeat scheduler."""
    return celery_argv(
        "beat",
        "-S",
        "tasks.beat:ZrepqScheduler",
        "--pidfile=",  # no pid file: systemd / the container knows the pid
        "--loglevel",
        loglevel,
        *extra,
    )


def registered_hosts(client: Any) -> list[str]:
    return sorted(registered(client))


class ZrepqScheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat, plus fleet entries expanded to every registered host when they fire."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        real = FLEET_TASKS.get(name)
        if real is None:
            return super().send_task(name, args, kwargs, **options)
        from tasks.app import settings_of

        hosts = registered_hosts(settings_of(self.app).redis())
        if not hosts:
            log.warning("schedule fired %s but no zrepq worker has registered yet", name)
        last = None
        options.pop("queue", None)
        for host in hosts:
            kw = {**(kwargs or {}), "host": host}
            try:
                c.validate(real, kw)
            except c.ValidationError as e:
                log.error("schedule %s: not sent to %s: %s", name, host, e)
                continue
            last = self.app.send_task(real, kwargs=kw, queue=c.queue_for(host), **options)
            log.info("schedule %s: %s sent to %s", name, real, json.dumps(kw))
        return last
