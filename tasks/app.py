"""The Celery app: JSON only, settings chosen for tasks that run for hours.

Workers start it as `celery -A tasks.app worker` (see `workers/main.py`), Flower and the
scheduler as `celery -A tasks.app flower|beat`. That process builds its settings once, when
it first asks for `tasks.app.app` (`tasks.settings.AppFile`: the TOML file and the
environment); a bad setting stops it with a `ConfigError` naming the key. Producers build
their own app from their settings (`producer/settings.py`) and send by name. The task bodies
live in `tasks.handlers`, imported by workers only.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from celery import Celery

from tasks.settings import AppFile, redbeat
from workers.keys import DEFAULT_QUEUE
from workers.settings import EX_CONFIG, ConfigError, Settings, load

# Settings of the apps built here, so producers reach the same Redis (sentinel, TLS, password).
_SETTINGS: WeakKeyDictionary[Celery, Settings[AppFile]] = WeakKeyDictionary()

# How tasks run (the broker's connection and wire format come from `Broker.celery()`).
_TASKS: dict[str, Any] = {
    # A task is acked when it ends; if its worker process dies it is re-queued. Every
    # task re-reads ZFS state first, so running again is safe.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "worker_disable_prefetch": True,
    # Flower: a queued task shows as PENDING, started ones as STARTED, progress as events.
    "task_send_sent_event": True,
    "worker_send_task_events": True,
    "task_track_started": True,
    "result_extended": True,
    "task_default_queue": DEFAULT_QUEUE,
    "worker_hijack_root_logger": False,
    "worker_cancel_long_running_tasks_on_connection_loss": False,
    "enable_utc": True,
}


def make_app(
    env: Mapping[str, str] | None = None, *, config: Settings[AppFile] | None = None
) -> Celery:
    """The zrepq Celery app; raises `ConfigError` naming every bad setting."""
    cfg = config or load(env, model=AppFile)
    app = Celery("zrepq", include=["tasks.handlers", "tasks.ops"])
    app.conf.update({**cfg.broker.celery(), **_TASKS, **redbeat(cfg)})
    _SETTINGS[app] = cfg
    return app


def settings_of(app: Celery) -> Settings[AppFile]:
    """The configuration `app` was built from (an app built elsewhere: its broker URL)."""
    cfg = _SETTINGS.get(app)
    if cfg is None:
        env = {"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": str(app.conf.broker_url)}
        cfg = load(env, model=AppFile)
    return cfg


_default: Celery | None = None

if TYPE_CHECKING:
    app: Celery  # see __getattr__


def __getattr__(name: str) -> Any:
    """`tasks.app.app`, built when first asked for: by `celery -A tasks.app` (the worker
    `zrepq-worker` became, Flower, beat), by the task modules in a worker. Importing this
    module reads no settings, so a producer that builds its own app reads them once.

    A bad setting stops that process as it stops every zrepq process: the problems named,
    exit status 78, which the worker's systemd unit does not restart (`zrepq-worker` checked
    the worker's tables before it became Celery; [scheduler] is checked here)."""
    global _default
    if name == "app":
        if _default is None:
            try:
                _default = make_app()
            except ConfigError as e:
                print(f"zrepq: {e.message}", file=sys.stderr)
                raise SystemExit(EX_CONFIG) from None
        return _default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
