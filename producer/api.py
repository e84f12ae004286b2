"""The Python API: enqueue zrep operations by task name onto the right host's queue.

    from producer.api import Producer
    p = Producer()                         # broker from ZREPQ_BROKER_URL
    r = p.sync("poola/prod", host="hosta")  # an AsyncResult
    r.get()                                 # {"ok": True, "result": {...}}
    with p.batch():                         # many at once: one connection, pipelined
        rs = [p.sync(fs, host="hosta") for fs in datasets]

The producer knows task names and argument schemas (`tasks.contract`), never worker
internals. Each method's keyword options are the fields of its task's model, validated
here too (`send`), so a typo fails at once with a clear message instead of in a worker's log.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery
from celery.result import AsyncResult

from producer.settings import default_app, settings_of
from tasks import contract as c
from tasks.registry import registered

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """A broker URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def split_host(target: str, host: str | None) -> tuple[str, str]:
    """`hosta:pool/fs` or (`pool/fs`, host): the host whose worker runs the task."""
    if ":" in target.split("/", 1)[0] and "@" not in target.split(":", 1)[0]:
        h, fs = target.split(":", 1)
        return h, fs
    if host is None:
        raise c.ValidationError(
            f"which host is {target} on? give --host HOST, write HOST:{target}, "
            "or set ZREPQ_DEFAULT_HOST"
        )
    return host, target


class Producer:
    def __init__(
        self,
        app: Celery | None = None,
        *,
        default_host: str | None = None,
        tag: str = "zrep",
        check_hosts: bool = True,
        connect_timeout: float = 5.0,
    ) -> None:
        self.app = app or default_app()
        self.default_host = (
            default_host
            or os.environ.get("ZREPQ_DEFAULT_HOST")
            or settings_of(self.app).model.producer.default_host
        )
        self.tag = tag
        self.check_hosts = check_hosts
        self.connect_timeout = connect_timeout
        self._known: dict[str, Any] | None = None
        self._local = threading.local()  # `.batch`: this thread's batch, if in one

    # ---- hosts ---------------------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        return str(self.app.conf.broker_url)

    def hosts(self) -> dict[str, dict[str, Any]]:
        """Hosts whose workers have registered, from `zrepq:host:*` (also a broker check)."""
        try:
            client = settings_of(self.app).redis(socket_timeout=self.connect_timeout)
            return registered(client)
        except (redis.RedisError, OSError) as e:
            raise c.HostUnreachable(
                f"cannot reach the broker at {redact(self.broker_url)}: {e}"
            ) from None

    def _check_host(self, host: str) -> None:
        c.queue_for(host)  # validates the name
        if not self.check_hosts:
            return
        if self._known is None:
            self._known = self.hosts()
        if host not in self._known:
            known = ", ".join(sorted(self._known)) or "none yet"
            raise c.ValidationError(
                f"unknown host {host!r}: no zrepq worker has registered it "
                f"(known hosts: {known}). Start `zrepq-worker` on {host} first.",
                host=host,
            )

    # ---- sending -------------------------------------------------------------------------

    def send(self, name: str, host: str, **kwargs: Any) -> AsyncResult[Any]:
        """Validate and enqueue task `name` on `host`'s queue."""
        kwargs = {"host": host, "tag": self.tag, **kwargs}
        args = c.validate(name, kwargs)
        self._check_host(args.host)
        body = args.model_dump(exclude_defaults=False)
        queue = c.queue_for(args.host)
        batch: _Batch | None = getattr(self._local, "batch", None)
        try:
            result = self.app.send_task(
                name,
                kwargs=body,
                queue=queue,
                retry=False,
                producer=batch.producer if batch else None,
                # A queue is declared once per connection (kombu caches it), but checking that
                # costs a tenth of a send: a batch checks once per queue.
                declare=[] if batch and queue in batch.declared else None,
                # What logs and Flower show of the arguments. Celery's `saferepr` (a fifth of
                # a send's CPU) gives the same text for these flat arguments (it only leaves
                # backslashes and control characters unescaped).
                argsrepr="()",
                kwargsrepr=self._repr(body),
            )
        except Exception as e:  # kombu raises OperationalError and friends
            raise c.HostUnreachable(
                f"cannot enqueue {name} on {redact(self.broker_url)}: {e}"
            ) from None
        if batch:
            batch.declared.add(queue)
        return result

    def _repr(self, kwargs: dict[str, Any]) -> str | None:
        text = repr(kwargs)
        return text if len(text) <= self.app.amqp.kwargsrepr_maxsize else None

    @contextmanager
    def batch(self) -> Iterator[Producer]:
        """Send every task enqueued in this thread inside the block over one connection.

        For many tasks at once (the CLI with many datasets, a script enqueueing thousands):
        each message and its `task-sent` event (which Flower shows as a queued task) are
        buffered in one Redis pipeline, written every few hundred messages and when the
        block ends, instead of a round trip each on a new Redis client: ~0.25 ms of CPU per
        task instead of ~0.65 ms.

        What `send` accepted is sent: also when the block raises (the error is raised after
        the buffered messages are written). Writing them can fail (Redis gone): that raises
        `HostUnreachable`, and the messages of that write may or may not have been queued.
        Nested batches are one batch, the outermost.
        """
        if getattr(self._local, "batch", None) is not None:
            yield self
            return
        # kombu will not pipeline publishes over a connection that retries a timed-out
        # command (a replayed pipeline could queue a message twice): this one raises instead.
        conn = self.app.connection_for_write(transport_options={"retry_on_timeout": False})
        sent = False
        try:
            producer = self.app.amqp.Producer(conn, auto_declare=False)
            batching = getattr(producer, "batch", None)  # kombu >= 5.7; else one producer
            with batching() if batching is not None else _no_batch() as pending:
                self._local.batch = _Batch(producer)
                try:
                    yield self
                except Exception:
                    _flush_quietly(pending)
                    raise
                finally:
                    self._local.batch = None
                sent = True
        except Exception as e:
            if not sent:  # the block's own error, or one `send` already reported
                raise
            raise c.HostUnreachable(
                f"cannot enqueue on {redact(self.broker_url)}: {e}; "
                "the tasks of the last write may or may not have been queued"
            ) from None
        finally:
            conn.release()

    def _target(self, fs: str, host: str | None) -> tuple[str, str]:
        return split_host(fs, host or self.default_host)

    def _on(self, name: str, target: str, host: str | None, **fields: Any) -> AsyncResult[Any]:
        """Task `name` for the dataset `target` (`HOST:pool/fs`, or `pool/fs` on `host`)."""
        h, fs = self._target(target, host)
        return self.send(name, h, fs=fs, **fields)

    # ---- the verbs: the fields of each are its task's model (`tasks.contract`) -------------

    def init(
        self, fs: str, dest_host: str, dest_fs: str, *, host: str | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """`zrep.init`; `options`: force, resume."""
        return self._on(c.INIT, fs, host, dest_host=dest_host, dest_fs=dest_fs, **options)

    def sync(
        self, fs: str, *, host: str | None = None, snapshot: bool = True, **options: Any
    ) -> AsyncResult[Any]:
        """`zrep.sync`; `options`: force, resume, changed_only, quiet_secs, ignore_pause.

        Two older forms stay for callers of this API: `fs@zrep_NNNNNN` is the deliberate
        rollback (`rollback`), and `snapshot=False` is `synconly`; they send those tasks."""
        if "@" in fs:
            return self.rollback(fs, host=host)
        if not snapshot:
            kept = {k: v for k, v in options.items() if k in c.SynconlyArgs.model_fields}
            return self.synconly(fs, host=host, **kept)
        return self._on(c.SYNC, fs, host, **options)

    def synconly(self, fs: str, *, host: str | None = None, **options: Any) -> AsyncResult[Any]:
        """`zrep.synconly`: send the newest snapshot; `options`: force, resume, ignore_pause."""
        return self._on(c.SYNCONLY, fs, host, **options)

    def rollback(self, snapshot: str, *, host: str | None = None) -> AsyncResult[Any]:
        """`zrep.rollback` (zrep's `sync fs@zrep_NNNNNN`): roll the standby back to it."""
        h, snap = self._target(snapshot, host)
        return self.send(c.ROLLBACK, h, snapshot=snap)

    def sync_all(
        self, hosts: list[str] | None = None, **options: Any
    ) -> dict[str, AsyncResult[Any]]:
        """One `zrep.sync_all` per host (all registered hosts by default); `options`: force,
        resume, changed_only, quiet_secs."""
        targets = hosts or sorted(self.hosts())
        if not targets:
            raise c.ValidationError("no hosts: no zrepq worker has registered yet")
        with self.batch():
            return {h: self.send(c.SYNC_ALL, h, **options) for h in targets}

    def refresh(self, fs: str, *, host: str | None = None, **options: Any) -> AsyncResult[Any]:
        """`zrep.refresh`, run on the standby's host; `options`: force, resume."""
        return self._on(c.REFRESH, fs, host, **options)

    def snaponly(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        return self._on(c.SNAPONLY, fs, host)

    def expire(
        self, fs: str | None = None, *, host: str | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """`zrep.expire` of fs, or without it of every master fs (`all=True`: every zrep fs)
        of `host`; `options`: all, local_only."""
        if fs is not None:
            return self._on(c.EXPIRE, fs, host, **options)
        return self.send(c.EXPIRE, host or self.default_host or "", fs=None, **options)

    def failover(self, fs: str, *, host: str | None = None, **options: Any) -> AsyncResult[Any]:
        """`zrep.failover`, run on the master; `options`: local_only, other_host."""
        return self._on(c.FAILOVER, fs, host, **options)

    def takeover(self, fs: str, *, host: str | None = None, **options: Any) -> AsyncResult[Any]:
        """`zrep.takeover`, run on the standby; `options`: local_only, other_host, force."""
        return self._on(c.TAKEOVER, fs, host, **options)

    def status(self, host: str, fs: list[str] | None = None, **options: Any) -> AsyncResult[Any]:
        """`zrep.status`; `options`: all, verbose."""
        return self.send(c.STATUS, host, fs=fs or [], **options)

    def list(self, host: str, fs: list[str] | None = None, **options: Any) -> AsyncResult[Any]:
        """`zrep.list`; `options`: verbose, masters_only, snapshots."""
        return self.send(c.LIST, host, fs=fs or [], **options)

    def lastsent(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        return self._on(c.LASTSENT, fs, host)

    def uptodate(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        return self._on(c.UPTODATE, fs, host)

    def clear(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        return self._on(c.CLEAR, fs, host)

    def pause(self, fs: str, *, host: str | None = None, **options: Any) -> AsyncResult[Any]:
        """Pause replication of fs: `sync all` skips it, a direct sync refuses; `options`:
        reason, by, expire."""
        return self._on(c.PAUSE, fs, host, **options)

    def resume(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        return self._on(c.RESUME, fs, host)

    def handback(self, fs: str, *, host: str | None = None, **options: Any) -> AsyncResult[Any]:
        """Give the pair back to zrep: remove zrepq's holds, `zrepq:*` properties and partial
        receive on both sides (`local_only`: this side), leaving zrep's state as it is."""
        return self._on(c.HANDBACK, fs, host, **options)

    def changeconfig(
        self, fs: str, other_host: str, other_fs: str, *, host: str | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """`zrep.changeconfig`; `options`: force, dest_side."""
        return self._on(
            c.CHANGECONFIG, fs, host, other_host=other_host, other_fs=other_fs, **options
        )

    def sentsync(
        self, snapshot: str, *, host: str | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """`zrep.sentsync`; `options`: local_only."""
        h, snap = self._target(snapshot, host)
        return self.send(c.SENTSYNC, h, snapshot=snap, **options)


class _Batch:
    """A thread's batch: its kombu producer, and the queues it has sent to."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.declared: set[str] = set()


@contextmanager
def _no_batch() -> Iterator[None]:
    yield None


def _flush_quietly(pending: Any) -> None:
    """Write what a batch holds before the block's own error propagates."""
    if pending is None:
        return
    try:
        pending.flush()
    except Exception as e:
        log.warning("could not enqueue the tasks accepted before the error: %s", e)
