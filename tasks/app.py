"""The Celery app: JSON only, settings chosen for tasks that run for hours.

Workers start it as `celery -A tasks.app worker` (see `workers/main.py`); producers import it
to send by name. The task bodies live in `tasks.handlers`, imported by workers only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    broker = env.get("ZREPQ_BROKER_URL", DEFAULT_BROKER)
    backend = env.get("ZREPQ_RESULT_BACKEND", broker)
    # Redis emulates acks: a message unacked for `visibility_timeout` is delivered again,
    # even while the first run goes on. A sync can take hours, so the timeout must be longer
    # than the longest one; a duplicate that still slips through meets the lease and is
    # reported as a duplicate, not run twice.
    visibility = float(env.get("ZREPQ_VISIBILITY_TIMEOUT", str(12 * 3600)))
    transport = {
        "visibility_timeout": visibility,
        "socket_keepalive": True,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": dict(transport),
        "visibility_timeout": visibility,
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
        "result_expires": int(env.get("ZREPQ_RESULT_EXPIRES", str(7 * 86400))),
        "task_default_queue": "zrepq.default",
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
    }


def make_app(env: Mapping[str, str] | None = None) -> Celery:
    app = Celery("zrepq", include=["tasks.handlers"])
    app.conf.update(settings(env))
    return app


app = make_app()
