"""The Python API: enqueue zrep operations by task name onto the right host's queue.

    from producer.api import Producer
    p = Producer()                         # broker from ZREPQ_BROKER_URL
    r = p.sync("poola/prod", host="hosta")  # an AsyncResult
    r.get()                                 # {"ok": True, "result": {...}}
    with p.batch():                         # many at once: one connection, pipelined
        rs = [p.sync(fs, host="hosta") for fs in datasets]

The producer knows task names and argument schemas (`tasks.contract`), never worker
internals. Arguments are validated here too, so a typo fails at once with a clear message
instead of in a worker's log.
"""

from __future__ import annotations

import json
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

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """A broker URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


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
        """Hosts whose workers have registered, from `zrepq:hosts` (also a broker check)."""
        try:
            client = settings_of(self.app).redis(socket_timeout=self.connect_timeout)
            raw = client.hgetall(c.HOSTS_KEY)
        except (redis.RedisError, OSError) as e:
            raise c.HostUnreachable(
                f"cannot reach the broker at {redact(self.broker_url)}: {e}"
            ) from None
        return {_text(k): json.loads(v) for k, v in raw.items()}

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

    def init(
        self,
        fs: str,
        dest_host: str,
        dest_fs: str,
        *,
        host: str | None = None,
        force: bool = False,
        resume: bool | None = None,
    ) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(
            c.INIT, h, fs=fs, dest_host=dest_host, dest_fs=dest_fs, force=force, resume=resume
        )

    def sync(
        self,
        fs: str,
        *,
        host: str | None = None,
        force: bool = False,
        resume: bool | None = None,
        changed_only: bool = False,
        quiet_secs: int | None = None,
        snapshot: bool = True,
        ignore_pause: bool = False,
    ) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(
            c.SYNC,
            h,
            fs=fs,
            force=force,
            resume=resume,
            changed_only=changed_only,
            quiet_secs=quiet_secs,
            snapshot=snapshot,
            ignore_pause=ignore_pause,
        )

    def pause(
        self,
        fs: str,
        *,
        host: str | None = None,
        reason: str = "",
        by: str | None = None,
        expire: bool = False,
    ) -> AsyncResult[Any]:
        """Pause replication of fs: `sync all` skips it, a direct sync refuses."""
        h, fs = self._target(fs, host)
        return self.send(c.PAUSE, h, fs=fs, reason=reason, by=by, expire=expire)

    def resume(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(c.RESUME, h, fs=fs)

    def sync_all(
        self,
        hosts: list[str] | None = None,
        *,
        force: bool = False,
        resume: bool | None = None,
        changed_only: bool = False,
        quiet_secs: int | None = None,
    ) -> dict[str, AsyncResult[Any]]:
        """One `zrep.sync_all` per host (all registered hosts by default)."""
        targets = hosts or sorted(self.hosts())
        if not targets:
            raise c.ValidationError("no hosts: no zrepq worker has registered yet")
        with self.batch():
            return {
                h: self.send(
                    c.SYNC_ALL,
                    h,
                    force=force,
                    resume=resume,
                    changed_only=changed_only,
                    quiet_secs=quiet_secs,
                )
                for h in targets
            }

    def snaponly(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(c.SNAPONLY, h, fs=fs)

    def expire(
        self,
        fs: str | None = None,
        *,
        host: str | None = None,
        all: bool = False,
        local_only: bool = False,
    ) -> AsyncResult[Any]:
        if fs is not None:
            h, fs = self._target(fs, host)
        else:
            h = host or self.default_host or ""
        return self.send(c.EXPIRE, h, fs=fs, all=all, local_only=local_only)

    def failover(
        self,
        fs: str,
        *,
        host: str | None = None,
        local_only: bool = False,
        other_host: str | None = None,
    ) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(c.FAILOVER, h, fs=fs, local_only=local_only, other_host=other_host)

    def takeover(
        self,
        fs: str,
        *,
        host: str | None = None,
        local_only: bool = False,
        other_host: str | None = None,
        force: bool = False,
    ) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(
            c.TAKEOVER, h, fs=fs, local_only=local_only, other_host=other_host, force=force
        )

    def refresh(
        self, fs: str, *, host: str | None = None, force: bool = False, resume: bool | None = None
    ) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(c.REFRESH, h, fs=fs, force=force, resume=resume)

    def status(
        self, host: str, fs: list[str] | None = None, *, all: bool = False, verbose: bool = False
    ) -> AsyncResult[Any]:
        return self.send(c.STATUS, host, fs=fs or [], all=all, verbose=verbose)

    def list(
        self,
        host: str,
        fs: list[str] | None = None,
        *,
        verbose: bool = False,
        masters_only: bool = False,
        snapshots: bool = False,
    ) -> AsyncResult[Any]:
        return self.send(
            c.LIST,
            host,
            fs=fs or [],
            verbose=verbose,
            masters_only=masters_only,
            snapshots=snapshots,
        )

    def lastsent(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(c.LASTSENT, h, fs=fs)

    def uptodate(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(c.UPTODATE, h, fs=fs)

    def clear(self, fs: str, *, host: str | None = None) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(c.CLEAR, h, fs=fs)

    def handback(
        self, fs: str, *, host: str | None = None, local_only: bool = False
    ) -> AsyncResult[Any]:
        """Give the pair back to zrep: remove zrepq's holds, `zrepq:*` properties and partial
        receive on both sides (`local_only`: this side), leaving zrep's state as it is."""
        h, fs = self._target(fs, host)
        return self.send(c.HANDBACK, h, fs=fs, local_only=local_only)

    def changeconfig(
        self,
        fs: str,
        other_host: str,
        other_fs: str,
        *,
        host: str | None = None,
        force: bool = False,
        dest_side: bool = False,
    ) -> AsyncResult[Any]:
        h, fs = self._target(fs, host)
        return self.send(
            c.CHANGECONFIG,
            h,
            fs=fs,
            other_host=other_host,
            other_fs=other_fs,
            force=force,
            dest_side=dest_side,
        )

    def sentsync(
        self, snapshot: str, *, host: str | None = None, local_only: bool = False
    ) -> AsyncResult[Any]:
        h, snap = self._target(snapshot, host)
        return self.send(c.SENTSYNC, h, snapshot=snap, local_only=local_only)


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
