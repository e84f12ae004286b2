"""The settings of the Celery app's processes: the storage hosts' tables, plus [scheduler].

Every process started on `tasks.app` (the worker, `zrepq scheduler`, Flower) reads these
tables of the fleet's file; the scheduler's are used by celery beat with redbeat (the
schedule lives in Redis, under zrepq's prefix; one beat holds the lock, a standby takes over
when it expires).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from workers.keys import BEAT_PREFIX
from workers.settings import ConfigError, Settings, WorkerFile, load
from workers.settings.sections import Env, HostName, Section


class SchedulerSection(Section):
    lock_timeout: Annotated[float, Env("ZREPQ_BEAT_LOCK_TIMEOUT")] = Field(default=60.0, ge=5)
    max_interval: Annotated[float, Env("ZREPQ_BEAT_MAX_INTERVAL")] = Field(default=10.0, gt=0)
    key_prefix: str = BEAT_PREFIX


class AppFile(WorkerFile):
    """The tables read by every process of the Celery app."""

    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)


def redbeat(cfg: Settings[AppFile]) -> dict[str, Any]:
    """redbeat's settings: the schedule's keys, its lock, and the broker's Redis for them."""
    scheduler = cfg.model.scheduler
    broker = cfg.broker
    conf: dict[str, Any] = {
        "redbeat_key_prefix": scheduler.key_prefix,
        "redbeat_lock_timeout": int(scheduler.lock_timeout),
        "beat_max_loop_interval": scheduler.max_interval,
    }
    ssl_opts = broker.ssl_options()
    if ssl_opts is not None:
        conf["redbeat_redis_use_ssl"] = dict(ssl_opts)
    if not broker.sentinel:
        conf["redbeat_redis_url"] = broker.first_url()
        conf["redbeat_redis_options"] = {}
        return conf
    b = broker.section
    rb: dict[str, Any] = {
        "sentinels": broker.sentinel_nodes(),
        "service_name": b.sentinel_master,
        "db": broker.db(),
        "socket_timeout": b.socket_timeout,
    }
    if broker.password():
        rb["password"] = broker.password()
    if b.sentinel_password is not None:
        rb["sentinel_kwargs"] = {"password": broker.sentinel_password()}
    conf["redbeat_redis_url"] = "redis-sentinel://"
    conf["redbeat_redis_options"] = rb
    return conf


# What the fleet's tools build their own tables from (producers import workers through tasks).
__all__ = [
    "AppFile",
    "ConfigError",
    "Env",
    "HostName",
    "SchedulerSection",
    "Section",
    "Settings",
    "load",
    "redbeat",
]
