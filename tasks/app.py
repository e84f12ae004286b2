"""The Celery app: JSON only, settings chosen for tasks that run for hours.

Workers start it as `celery -A tasks.app worker` (see `workers/main.py`), Flower and the
scheduler as `celery -A tasks.app flower|beat`; producers import it to send by name. Its
settings come from `workers.settings` (the TOML file and the environment); a bad setting
stops the import with a `ConfigError` naming it. The task bodies live in `tasks.handlers`,
imported by workers only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

from celery import Celery

from workers.settings import Settings, load

# Settings of the apps built here, so producers reach the same Redis (sentinel, TLS, password).
_SETTINGS: WeakKeyDictionary[Celery, Settings] = WeakKeyDictionary()


def settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Celery settings from the configuration file and environment (`workers.settings`)."""
    return _celery_settings(load(os.environ if env is None else env))


def _celery_settings(cfg: Settings) -> dict[str, Any]:
    # Redis emulates acks: a message unacked for `visibility_timeout` is delivered again,
    # even while the first run goes on. A sync can take hours, so the timeout must be longer
    # than the longest one; a duplicate that still slips through meets the lease and is
    # reported as a duplicate, not run twice. (`cfg.celery()` sets it in all three places.)
    return {
        **cfg.celery(),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # JSON only: a pickle from the queue would be code execution on a storage host.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
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
        # A result written while Redis restarts is retried, not lost: a lost member result
        # would fail the whole `sync all` summary (ChordError) although the syncs ran.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "task_default_queue": "zrepq.default",
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
    }


def make_app(env: Mapping[str, str] | None = None, *, config: Settings | None = None) -> Celery:
    """The zrepq Celery app; raises `ConfigError` naming every bad setting."""
    cfg = config or load(os.environ if env is None else env)
    app = Celery("zrepq", include=["tasks.handlers", "tasks.ops"])
    app.conf.update(_celery_settings(cfg))
    _SETTINGS[app] = cfg
    return app


def settings_of(app: Celery) -> Settings:
    """The configuration `app` was built from (an app built elsewhere: its broker URL)."""
    cfg = _SETTINGS.get(app)
    if cfg is None:
        cfg = load({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": str(app.conf.broker_url)})
    return cfg


app = make_app()
