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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from celery import Celery
from celery.app.amqp import AMQP

from tasks.settings import AppFile, redbeat
from workers.auth import signing
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
    # Celery's consumer, reconnecting where a lost broker made it exit (`tasks/consumer.py`).
    "worker_consumer": "tasks.consumer:Consumer",
    "enable_utc": True,
}


class SigningAMQP(AMQP):
    """Celery's message builder, which signs every task message of a zrepq app.

    Every message Celery builds goes through `as_task_v2`: `send_task` (the CLI, the API,
    Flower's send-task, beat), `apply_async` and `task.replace`/chords in a worker. The
    signer is the app's (`[signing] key`); an app without one sends unsigned messages, which
    workers refuse. (Not Celery's `before_task_publish` signal: it does not say which app
    publishes, so a process-wide key would sign for every Celery app in the process.)

    Inside a task a worker runs, `signing.ACTING_FOR` holds the request it acts on: what it
    sends then is a hand-over, which embeds that request (`signing.origin_of`).
    """

    def as_task_v2(self, task_id: str, name: str, *args: Any, **kwargs: Any) -> Any:
        msg = super().as_task_v2(task_id, name, *args, **kwargs)
        signer = _SIGNERS.get(self.app)
        if signer is not None:
            task_kwargs = msg.body[1]
            origin, hop = signing.ACTING_FOR.get() or (None, -1)
            msg.headers[signing.HEADER] = signer.envelope(
                name, task_id, task_kwargs, origin=origin, hop=hop + 1
            )
        return msg


_SIGNERS: WeakKeyDictionary[Celery, signing.Signer] = WeakKeyDictionary()

# The producer of a `pipelined()` block in this thread (None outside one).
_PIPELINE: ContextVar[Any] = ContextVar("zrepq_pipeline_producer", default=None)


class ZrepqCelery(Celery):
    """Celery, whose publishers take the producer of a `pipelined()` block when one is open.

    Celery acquires a producer per call (`producer_or_acquire`): a chord's header publishes
    each member with one round trip for the message and one for its `task-sent` event. There
    is no way to hand a chord a producer; this is the one place every publish asks for one.
    """

    def producer_or_acquire(self, producer: Any = None) -> Any:
        return super().producer_or_acquire(producer if producer is not None else _PIPELINE.get())


@contextmanager
def pipelined(app: Celery) -> Iterator[None]:
    """Publish what this thread sends inside the block in Redis pipelines (kombu's
    `Producer.batch`: a write every 1,000 operations, a message and its `task-sent` event
    being two, and one at the end): a `sync all` of 500 datasets makes one write instead of
    1,000 round trips (issue 17: a 10,000-dataset fan-out).

    Its own connection, which does not retry a timed-out command: kombu pipelines nothing over
    one that does (a replayed pipeline could queue a message twice). A block that raises
    discards what it had not written yet."""
    conn = app.connection_for_write(transport_options={"retry_on_timeout": False})
    try:
        producer = app.amqp.Producer(conn, auto_declare=False)
        batching = getattr(producer, "batch", None)  # kombu >= 5.7; else one round trip each
        with batching() if batching is not None else nullcontext():
            token = _PIPELINE.set(producer)
            try:
                yield
            finally:
                _PIPELINE.reset(token)
    finally:
        conn.release()


def signer_for(cfg: Settings[Any]) -> signing.Signer | None:
    """The producer key of these settings (None: none configured); `ConfigError` if bad."""
    sg = cfg.model.signing
    if sg.key is None:
        return None
    try:
        return signing.Signer.from_file(sg.key, sg.identity, sg.ttl)
    except signing.KeyFileError as e:
        raise ConfigError(f"[signing] key: {e}") from None


def make_app(
    env: Mapping[str, str] | None = None, *, config: Settings[AppFile] | None = None
) -> Celery:
    """The zrepq Celery app; raises `ConfigError` naming every bad setting."""
    cfg = config or load(env, model=AppFile)
    signer = signer_for(cfg)
    app = ZrepqCelery("zrepq", include=["tasks.handlers", "tasks.ops"], amqp=SigningAMQP)
    app.conf.update({**cfg.broker.celery(), **_TASKS, **redbeat(cfg)})
    _SETTINGS[app] = cfg
    if signer is not None:
        _SIGNERS[app] = signer
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
