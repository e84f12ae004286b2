"""One thin function per task name: validate the JSON arguments, call the engine, report.

Imported by workers only (`include=["tasks.handlers"]`). Each body builds an engine for this
host (the transport and leases are cached per worker process), runs one engine operation and
returns a JSON record. Progress events become `PROGRESS` states (for `AsyncResult.info`) and
`task-progress` events (for Flower), at most about once a second.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from celery import Task, chord
from celery.signals import heartbeat_sent, worker_ready

from tasks import contract as c
from tasks.app import app, settings_of
from tasks.errors import TaskFailed
from workers.engine import Engine, liveness
from workers.engine.errors import LockHeld, ValidationError, ZrepqError
from workers.engine.events import Event, Message, StreamFinished, StreamProgress, StreamStarted
from workers.engine.formats import list_verbose_text, names_text, status_text
from workers.engine.locks import LockToken
from workers.engine.ports import Locks, Transport
from workers.keys import HOSTS_KEY
from workers.runtime import engine_from_env, transport_for

log = logging.getLogger(__name__)


# ---- per-process context ---------------------------------------------------------------


@lru_cache(maxsize=1)
def _context(pid: int) -> tuple[Transport, Locks]:
    """One transport (cached SSH connections) and one lease client per worker process."""
    cfg = settings_of(app)  # built once per process, with the app
    transport = transport_for(cfg, cfg.host())
    client = cfg.redis()  # the broker's Redis: sentinel, TLS and password aware
    return transport, cfg.locks(transport.local_host, client=client)


def this_host() -> str:
    return _context(os.getpid())[0].local_host


_LOG_LEVEL = {"warning": logging.WARNING, "detail": logging.DEBUG}


class Progress:
    """Engine events → PROGRESS state + `task-progress` event, rate-limited.

    A stream that is over within `quiet` seconds publishes nothing: for the many empty
    incrementals of a `sync all`, the state and event writes (four Redis round trips) cost
    more than the stream itself, and the task's STARTED and SUCCESS states say it all. A
    longer stream shows up at its first progress tick (under a second in) and then about
    once a second, ending with stage "finishing".
    """

    def __init__(self, task: Task[Any, Any], interval: float = 1.0, quiet: float = 0.5) -> None:
        self.task = task
        self.interval = interval
        self.quiet = quiet
        self._last = 0.0
        self._shown = False  # anything published for the current stream
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            log.log(_LOG_LEVEL.get(event.level, logging.INFO), "%s", event.text)
            return
        if isinstance(event, StreamStarted):
            self.meta = {
                "dataset": event.dataset,
                "snapshot": event.snapshot,
                "base": event.base,
                "dest": f"{event.dest_host}:{event.dest_fs}",
                "bytes_sent": 0,
                "total": event.total,
                "rate": 0.0,
                "eta": None,
                "elapsed": 0.0,
                "resumed": event.resumed,
                "stage": "sending",
            }
            self._shown = False
        elif isinstance(event, StreamProgress):
            self.meta.update(
                bytes_sent=event.bytes_sent,
                total=event.total,
                rate=round(event.rate, 1),
                eta=event.eta,
                elapsed=round(event.elapsed, 2),
            )
            if self._shown:
                self._publish()
            elif event.elapsed >= self.quiet:
                self._shown = True
                self._publish(force=True)
        elif isinstance(event, StreamFinished):
            self.meta.update(
                bytes_sent=event.bytes_sent, elapsed=round(event.elapsed, 2), stage="finishing"
            )
            if self._shown:
                self._publish(force=True)

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.interval:
                return
            self._last = now
        if self.task.request.id is None:  # called directly, not through the queue
            return
        meta = dict(self.meta)
        self.task.update_state(state="PROGRESS", meta=meta)
        self.task.send_event("task-progress", result=meta)


class DeferredPeer:
    """The other side of failover/takeover, reached through its own queue.

    The engine asks for `takeover -L` (or `failover`) on the other host at the end of its
    local half; the task then *replaces* itself with that task on the other host's queue, so
    no worker ever blocks waiting for another task, and the caller's result is the other
    side's result.
    """

    def __init__(self) -> None:
        self.next: tuple[str, dict[str, Any]] | None = None

    def takeover_local(
        self, host: str, fs: str, *, tag: str, snap: str | None = None
    ) -> list[Message]:
        target = f"{fs}@{snap}" if snap else fs
        self.next = (c.TAKEOVER, {"host": host, "fs": target, "tag": tag, "local_only": True})
        return []  # that half runs later, as its own task

    def failover(self, host: str, fs: str, *, tag: str) -> list[Message]:
        self.next = (c.FAILOVER, {"host": host, "fs": fs, "tag": tag})
        return []


def _engine(task: Task[Any, Any], args: c.Args, peer: DeferredPeer | None = None) -> Engine:
    transport, locks = _context(os.getpid())
    if args.host != transport.local_host:
        raise ValidationError(
            f"task for host {args.host!r} reached the worker of {transport.local_host!r}; "
            "refusing to act on another host's datasets",
            host=transport.local_host,
        )
    eng = engine_from_env(
        settings=settings_of(app),
        observer=Progress(task),
        peer=peer or DeferredPeer(),
        transport=transport,
    )
    eng.locks = locks
    eng.operation_id = task.request.id
    return eng.with_tag(args.tag)


def _run(
    task: Task[Any, Any],
    name: str,
    kwargs: dict[str, Any],
    body: Callable[[Engine, Any], Any],
    *,
    record_errors: bool = False,
) -> dict[str, Any]:
    try:
        args = c.validate(name, kwargs)
        eng = _engine(task, args)
        try:
            return c.ok(body(eng, args))
        except LockHeld as e:
            wait = _redelivery_wait(task, e, eng)
            if wait is None:
                raise
            # The first delivery of this very message died holding the lease (its worker
            # process was killed; Celery re-queued the message, acks late). Nobody renews that
            # lease any more: wait for it to lapse, then run; the engine re-reads every state.
            log.warning("%s: %s; the earlier run is gone, waiting up to %.0fs", name, e, wait)
            eng.lock_wait = wait
            return c.ok(body(eng, args))
    except ZrepqError as e:
        record = e.to_record()
        if isinstance(e, LockHeld) and task.request.id and task.request.id in (e.holder or ""):
            # Redis redelivered a message whose first run still holds the lease.
            record.update(kind="duplicate", message=f"duplicate delivery: {e.message}")
        log.error("%s failed: %s", name, e.message)
        if record_errors:
            return c.failed(record)
        raise TaskFailed(record) from None


def _redelivery_wait(task: Task[Any, Any], e: LockHeld, eng: Engine) -> float | None:
    """Seconds to wait for a lease held by an earlier, dead, delivery of this task; else None.

    The lease itself takes over at once from a holder on this host that has provably ended
    (`workers.lease`), so this wait is left for what it cannot prove: a token without the
    holder's process identity (written by an older zrepq). A holder with this task's id whose
    process is alive on this host is a true duplicate (Redis redelivered the message while
    the first run goes on): None, it is reported as one.
    """
    tid = task.request.id
    if not tid or not e.holder or tid not in e.holder:
        return None
    holder = LockToken.parse(e.holder)
    if holder is not None and holder.owner == eng.host and _alive(holder):
        return None
    ttl = getattr(eng.locks, "ttl", None)
    return float(ttl) + 1.0 if ttl else None


def _alive(holder: LockToken) -> bool:
    if holder.process is not None:
        ended = liveness.gone(holder.pid, holder.process)
        if ended is not None:
            return not ended
    return liveness.exists(holder.pid)


# ---- the tasks -------------------------------------------------------------------------


@app.task(name=c.INIT, bind=True)
def init(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(
        self,
        c.INIT,
        kwargs,
        lambda e, a: e.init(a.fs, a.dest_host, a.dest_fs, force=a.force, resume=a.resume).to_dict(),
    )


def _sync_body(e: Engine, a: c.SyncArgs) -> dict[str, Any]:
    if "@" in a.fs:
        return e.sync_to_snapshot(a.fs).to_dict()
    if not a.snapshot:
        return e.synconly(
            a.fs, force=a.force, resume=a.resume, ignore_pause=a.ignore_pause
        ).to_dict()
    return e.sync(
        a.fs,
        force=a.force,
        resume=a.resume,
        changed_only=a.changed_only,
        quiet_secs=a.quiet_secs,
        ignore_pause=a.ignore_pause,
    ).to_dict()


@app.task(name=c.SYNC, bind=True)
def sync(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    record = bool(kwargs.get("record_errors")) if isinstance(kwargs, dict) else False
    t0 = time.time()
    res = _run(self, c.SYNC, kwargs, _sync_body, record_errors=record)
    res.setdefault("dataset", kwargs.get("fs"))
    res["seconds"] = round(time.time() - t0, 3)
    return res


@app.task(name=c.SYNC_ALL, bind=True)
def sync_all(self: Task[Any, Any], /, **kwargs: Any) -> Any:
    """Fan out one `zrep.sync` per master fs of this host; a chord collects one summary.

    The members run on this host's queue, so the worker's concurrency caps parallel sends.
    They return failure records instead of raising, so one failed dataset never stops the
    summary.
    """
    started = time.time()
    try:
        args = c.validate(c.SYNC_ALL, kwargs)
        assert isinstance(args, c.SyncAllArgs)
        eng = _engine(self, args)
        fss = eng.masters()
    except ZrepqError as e:  # fail with the contract's record, as every other task does
        log.error("%s failed: %s", c.SYNC_ALL, e.message)
        raise TaskFailed(e.to_record()) from None
    if not fss:
        return c.ok(_summary([], args.host, started))
    base = {
        "host": args.host,
        "tag": args.tag,
        "force": args.force,
        "resume": args.resume,
        "changed_only": args.changed_only,
        "quiet_secs": args.quiet_secs,
        "record_errors": True,
    }
    queue = c.queue_for(args.host)
    header = [
        app.signature(c.SYNC, kwargs={**base, "fs": fs}, queue=queue, immutable=True) for fs in fss
    ]
    callback = app.signature(
        c.SYNC_ALL_SUMMARY, kwargs={"host": args.host, "started": started}, queue=queue
    )
    return self.replace(chord(header, callback))


@app.task(name=c.SYNC_ALL_SUMMARY)
def sync_all_summary(results: list[dict[str, Any]], host: str, started: float) -> dict[str, Any]:
    return c.ok(_summary(results, host, started))


# Failures that are not failures of the pair: reported, but not as "failed".
_STATUS_OF_KIND = {"locked": "skipped", "duplicate": "skipped", "paused": "paused"}


def _summary(results: list[dict[str, Any]], host: str, started: float) -> dict[str, Any]:
    rows = []
    for r in results:
        if r.get("ok"):
            res = r["result"]
            status = res.get("status", "synced")
            rows.append(
                {
                    "dataset": res.get("dataset") or r.get("dataset"),
                    "status": status,
                    "snapshot": res.get("snapshot"),
                    "bytes": res.get("bytes_sent", 0),
                    "seconds": r.get("seconds", res.get("seconds", 0.0)),
                }
            )
        else:
            err = r.get("error", {})
            kind = err.get("kind")
            rows.append(
                {
                    "dataset": err.get("dataset") or r.get("dataset"),
                    "status": _STATUS_OF_KIND.get(kind or "", "failed"),
                    "error": err.get("message"),
                    "kind": kind,
                    "bytes": 0,
                    "seconds": r.get("seconds", 0.0),
                }
            )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {
        "host": host,
        "datasets": rows,
        "counts": counts,
        "failed": counts.get("failed", 0),
        "bytes": sum(int(row["bytes"] or 0) for row in rows),
        "seconds": round(time.time() - started, 3),
    }


@app.task(name=c.SNAPONLY, bind=True)
def snaponly(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(self, c.SNAPONLY, kwargs, lambda e, a: e.snaponly(a.fs))


@app.task(name=c.EXPIRE, bind=True)
def expire(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    def body(e: Engine, a: c.ExpireArgs) -> Any:
        fss = [a.fs] if a.fs else (e.list_fs() if a.all else e.masters())
        return [e.expire(fs, local_only=a.local_only).to_dict() for fs in fss]

    return _run(self, c.EXPIRE, kwargs, body)


def _role(task: Task[Any, Any], name: str, kwargs: dict[str, Any]) -> Any:
    """failover/takeover. The result carries `sides`: what each host's half did, in order.

    The half that hands over to the other host's worker (`task.replace`) passes its side on
    in the next task's `prior`, so the final result, which is the last half's, reports both
    (`hosta:pool/fs now standby`, `hostb:pool/fs now master`). A takeover that only asks the
    master to fail over did nothing itself and adds no side.
    """
    peer = DeferredPeer()

    def body(e: Engine, a: c.RoleArgs) -> Any:
        e.peer = peer
        if name == c.FAILOVER:
            res = e.failover(a.fs, local_only=a.local_only, host=a.other_host)
        else:
            res = e.takeover(a.fs, local_only=a.local_only, host=a.other_host, force=a.force)
        forwarded = name == c.TAKEOVER and not a.local_only and peer.next is not None
        mine = [] if forwarded else [_side(res.to_dict())]
        return {**res.to_dict(), "sides": [p.model_dump() for p in a.prior] + mine}

    result = _run(task, name, kwargs, body)
    if peer.next is not None:
        nxt, kw = peer.next
        kw = {**kw, "prior": result["result"]["sides"]}
        # Hand the other half to the other host's worker; our result becomes its result.
        return task.replace(app.signature(nxt, kwargs=kw, queue=c.queue_for(kw["host"])))
    return result


def _side(res: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": res["host"],
        "dataset": res["dataset"],
        "role": res["role"],
        "synced": res.get("synced"),
        "message": (res.get("message") or "")[:500],  # RoleSide's limit
    }


@app.task(name=c.FAILOVER, bind=True)
def failover(self: Task[Any, Any], /, **kwargs: Any) -> Any:
    return _role(self, c.FAILOVER, kwargs)


@app.task(name=c.TAKEOVER, bind=True)
def takeover(self: Task[Any, Any], /, **kwargs: Any) -> Any:
    return _role(self, c.TAKEOVER, kwargs)


@app.task(name=c.REFRESH, bind=True)
def refresh(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(
        self,
        c.REFRESH,
        kwargs,
        lambda e, a: e.refresh(a.fs, force=a.force, resume=a.resume).to_dict(),
    )


@app.task(name=c.STATUS, bind=True)
def status(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    def body(e: Engine, a: c.StatusArgs) -> Any:
        rows = e.status(a.fs, all=a.all)
        text = status_text(rows, verbose=a.verbose, all_fs=a.all, dateformat=e.config.dateformat)
        return {"rows": [r.to_dict() for r in rows], "text": text}

    return _run(self, c.STATUS, kwargs, body)


@app.task(name=c.LIST, bind=True)
def list_(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    def body(e: Engine, a: c.ListArgs) -> Any:
        if a.snapshots:
            text = e.list_snapshots(a.fs)
            return {"text": text}
        if a.verbose:
            entries = e.list_verbose(a.fs)
            return {"entries": entries, "text": list_verbose_text(entries, blank_between=not a.fs)}
        names = e.list_fs(a.fs, masters_only=a.masters_only)
        return {"names": names, "text": names_text(names)}

    return _run(self, c.LIST, kwargs, body)


@app.task(name=c.LASTSENT, bind=True)
def lastsent(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(self, c.LASTSENT, kwargs, lambda e, a: e.lastsent(a.fs))


@app.task(name=c.UPTODATE, bind=True)
def uptodate(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(self, c.UPTODATE, kwargs, lambda e, a: e.uptodate(a.fs))


@app.task(name=c.CLEAR, bind=True)
def clear(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(self, c.CLEAR, kwargs, lambda e, a: e.clear(a.fs))


@app.task(name=c.CHANGECONFIG, bind=True)
def changeconfig(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(
        self,
        c.CHANGECONFIG,
        kwargs,
        lambda e, a: e.changeconfig(
            a.fs, a.other_host, a.other_fs, force=a.force, dest_side=a.dest_side
        ),
    )


@app.task(name=c.SENTSYNC, bind=True)
def sentsync(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(
        self, c.SENTSYNC, kwargs, lambda e, a: e.sentsync(a.snapshot, local_only=a.local_only)
    )


@app.task(name=c.PAUSE, bind=True)
def pause(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(
        self, c.PAUSE, kwargs, lambda e, a: e.pause(a.fs, reason=a.reason, by=a.by, expire=a.expire)
    )


@app.task(name=c.RESUME, bind=True)
def resume(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(self, c.RESUME, kwargs, lambda e, a: e.resume(a.fs))


@app.task(name=c.HANDBACK, bind=True)
def handback(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _run(
        self, c.HANDBACK, kwargs, lambda e, a: e.handback(a.fs, local_only=a.local_only).to_dict()
    )


# Set once the worker is ready (and has tried to register): event heartbeats start before
# that, and a fresh worker's first heartbeat must not read as "Redis lost its data".
_ready = threading.Event()


@worker_ready.connect
def _register_host(sender: Any = None, **_: Any) -> None:
    """Record this host in `zrepq:hosts`, so producers know which hosts exist."""
    import json

    import redis

    _ready.set()
    host = this_host()
    try:
        client = settings_of(app).redis()
        client.hset(
            HOSTS_KEY,
            host,
            json.dumps(
                {
                    "queue": c.queue_for(host),
                    "node": getattr(sender, "hostname", None),
                    "registered": time.time(),
                }
            ),
        )
    except redis.RedisError as e:
        log.error("could not register host %s in %s: %s", host, HOSTS_KEY, e)


@lru_cache(maxsize=1)
def _registry_client(pid: int) -> Any:
    return settings_of(app).redis()


@heartbeat_sent.connect
def _stay_registered(sender: Any = None, **_: Any) -> None:
    """Register again when `zrepq:hosts` lost this host.

    A Redis restarted without its data forgets the registry while the workers reconnect by
    themselves, and producers refuse hosts that are not registered. The worker's event
    heartbeat (every 2 s) checks with one HEXISTS.
    """
    import types

    import redis

    if not _ready.is_set():
        return
    host = this_host()
    try:
        if _registry_client(os.getpid()).hexists(HOSTS_KEY, host):
            return
    except redis.RedisError:
        return
    log.warning(
        "host %s is missing from %s (Redis lost its data?); registering again", host, HOSTS_KEY
    )
    node = getattr(getattr(sender, "eventer", None), "hostname", None)
    _register_host(types.SimpleNamespace(hostname=node))
