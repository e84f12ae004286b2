"""The Python API: enqueue zrep operations by task name onto the right host's queue.

    from producer.api import Producer
    p = Producer()                         # broker from ZREPQ_BROKER_URL
    r = p.sync("poola/prod", host="hosta")  # an AsyncResult
    r.get()                                 # {"ok": True, "result": {...}}

The producer knows task names and argument schemas (`tasks.contract`), never worker
internals. Arguments are validated here too, so a typo fails at once with a clear message
instead of in a worker's log.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery
from celery.result import AsyncResult

from tasks import contract as c
from tasks.app import app as default_app
from tasks.app import settings_of


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
        self.app = app or default_app
        self.default_host = (
            default_host
            or os.environ.get("ZREPQ_DEFAULT_HOST")
            or settings_of(self.app).model.producer.default_host
        )
        self.tag = tag
        self.check_hosts = check_hosts
        self.connect_timeout = connect_timeout
        self._known: dict[str, Any] | None = None

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
        try:
            return self.app.send_task(
                name,
                kwargs=args.model_dump(exclude_defaults=False),
                queue=c.queue_for(args.host),
                retry=False,
            )
        except Exception as e:  # kombu raises OperationalError and friends
            raise c.HostUnreachable(
                f"cannot enqueue {name} on {redact(self.broker_url)}: {e}"
            ) from None

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
