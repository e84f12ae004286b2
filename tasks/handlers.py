"""One thin function per task name: validate the JSON arguments, run the verb, report.

Imported by workers only (`include=["tasks.handlers"]`). Each task validates its message
into its model (`tasks/contract.py`: the envelope and the verb's request), builds this
host's engine `Context` (the transport and leases are cached per worker process), runs the
verb (`workers.engine.verbs.run`) and returns a JSON record. Progress events become
`PROGRESS` states and `task-progress` events (`tasks/progress.py`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from celery import Celery, Task, chord
from celery.exceptions import Ignore
from celery.signals import heartbeat_sent, worker_ready

from tasks import contract as c
from tasks import registry
from tasks.app import app, pipelined, settings_of
from tasks.errors import TaskFailed
from tasks.guard import Guarded, allow
from tasks.ops import forget_unlisted
from tasks.progress import Progress
from tasks.summary import summary
from workers.engine import Context, liveness, requests, rollback, sync
from workers.engine.errors import LockHeld, ValidationError, ZrepqError
from workers.engine.events import Message
from workers.engine.formats import status_text
from workers.engine.locks import LockToken
from workers.engine.ports import Locks, Peer, Transport
from workers.engine.report import list_names, masters, status
from workers.engine.tags import masters_by_tag, tags
from workers.engine.verbs import record, run
from workers.runtime import context_from_env, transport_for

log = logging.getLogger(__name__)

Body = Callable[[Context, Any], Any]


# ---- per-process parts, per-task context -----------------------------------------------


@lru_cache(maxsize=1)
def _worker_parts(pid: int) -> tuple[Transport, Locks]:
    """One transport (cached SSH connections) and one lease client per worker process."""
    cfg = settings_of(app)  # built once per process, with the app
    transport = transport_for(cfg, cfg.host())
    client = cfg.redis()  # the broker's Redis: sentinel, TLS and password aware
    return transport, cfg.locks(transport.local_host, client=client)


def this_host() -> str:
    return _worker_parts(os.getpid())[0].local_host


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


def _context(task: Task[Any, Any], args: c.Args, peer: Peer) -> Context:
    """This host's engine context for one task, complete: the worker's transport and
    leases, the task's progress and peer, its id in lock tokens, the message's tag."""
    transport, locks = _worker_parts(os.getpid())
    if args.host != transport.local_host:
        raise ValidationError(
            f"task for host {args.host!r} reached the worker of {transport.local_host!r}; "
            "refusing to act on another host's datasets",
            host=transport.local_host,
        )
    ctx = context_from_env(
        settings=settings_of(app),
        observer=Progress(task),
        peer=peer,
        transport=transport,
        locks=locks,
        operation_id=task.request.id,
    )
    return ctx.with_tag(args.tag)


def _verb(ctx: Context, args: Any) -> Any:
    """The default body: the verb the message's model names, its result as a record."""
    return record(run(ctx, args))


def _run(
    task: Task[Any, Any],
    name: str,
    kwargs: dict[str, Any],
    body: Body = _verb,
    *,
    record_errors: bool = False,
    peer: Peer | None = None,
) -> dict[str, Any]:
    try:
        args = c.validate(name, kwargs)
        allow(name, args)  # this host's policy, for whoever asked (`tasks.guard`)
        ctx = _context(task, args, peer or DeferredPeer())
        try:
            return c.ok(body(ctx, args))
        except LockHeld as e:
            wait = _redelivery_wait(task, e, ctx)
            if wait is None:
                raise
            # The first delivery of this very message died holding the lease (its worker
            # process was killed; Celery re-queued the message, acks late). Nobody renews that
            # lease any more: wait for it to lapse, then run; the engine re-reads every state.
            log.warning("%s: %s; the earlier run is gone, waiting up to %.0fs", name, e, wait)
            return c.ok(body(replace(ctx, lock_wait=wait), args))
    except ZrepqError as e:
        rec = e.to_record()
        if isinstance(e, LockHeld) and task.request.id and task.request.id in (e.holder or ""):
            # Redis redelivered a message whose first run still holds the lease.
            rec.update(kind="duplicate", message=f"duplicate delivery: {e.message}")
        log.error("%s failed: %s", name, e.message)
        if record_errors:
            return c.failed(rec)
        raise TaskFailed(rec) from None


def _redelivery_wait(task: Task[Any, Any], e: LockHeld, ctx: Any) -> float | None:
    """Seconds to wait for a lease held by an earlier, dead, delivery of this task; else None.

    The lease itself takes over at once from a holder on this host that has provably ended
    (`workers.lease`), so this wait is left for what it cannot prove: a token without the
    holder's process identity (written by an older zrepq). A holder with this task's id whose
    process is alive on this host is a true duplicate (Redis redelivered the message while
    the first run goes on): None, it is reported as one. (`ctx`: its `host` and `locks`.)
    """
    tid = task.request.id
    if not tid or not e.holder or tid not in e.holder:
        return None
    holder = LockToken.parse(e.holder)
    if holder is not None and holder.owner == ctx.host and _alive(holder):
        return None
    ttl = getattr(ctx.locks, "ttl", None)
    return float(ttl) + 1.0 if ttl else None


def _alive(holder: LockToken) -> bool:
    if holder.process is not None:
        ended = liveness.gone(holder.pid, holder.process)
        if ended is not None:
            return not ended
    return liveness.exists(holder.pid)


# ---- the tasks -------------------------------------------------------------------------


def _plain(name: str) -> None:
    """Register task `name` whose body is its verb alone."""

    @app.task(name=name, bind=True, base=Guarded)
    def task(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
        return _run(self, name, kwargs)


for _name in (
    c.INIT, c.SNAPONLY, c.REFRESH, c.LIST, c.LASTSENT, c.UPTODATE, c.CLEAR, c.CHANGECONFIG,
    c.SENTSYNC, c.PAUSE, c.RESUME, c.HANDBACK,
):  # fmt: skip
    _plain(_name)


def _legacy_sync(ctx: Context, a: c.SyncArgs) -> Any:
    """`zrep.sync`, and its older forms: `fs@snap` is a rollback, `snapshot=false` synconly."""
    if "@" in a.fs:
        return record(rollback.rollback(ctx, requests.RollbackRequest(snapshot=a.fs)))
    if not a.snapshot:
        return record(sync.synconly(ctx, requests.narrow(requests.SynconlyRequest, a)))
    return record(sync.sync(ctx, a))


def _sync_task(
    task: Task[Any, Any], name: str, kwargs: dict[str, Any], body: Body = _verb
) -> dict[str, Any]:
    """A sync's record also says which dataset and how long, for `sync all`'s summary."""
    record_errors = bool(kwargs.get("record_errors"))
    t0 = time.time()
    try:
        res = _run(task, name, kwargs, body, record_errors=record_errors)
    finally:
        _forget_progress(task)
    res.setdefault("dataset", kwargs.get("fs", kwargs.get("snapshot")))
    res.setdefault("tag", kwargs.get("tag", "zrep"))
    res["seconds"] = round(time.time() - t0, 3)
    return res


def _forget_progress(task: Task[Any, Any]) -> None:
    """A `sync all` member keeps no result (`ignore_result`, see `sync_all`); a long stream's
    PROGRESS state (stored for `zrepq status --fleet` while it runs, perhaps by an earlier
    delivery that died) is deleted when it ends, so nothing of the member is left in Redis
    once the summary has its outcome. One DEL, whether or not there was any."""
    req = task.request
    if req.id and req.ignore_result:
        try:
            task.backend.forget(req.id)
        except Exception as e:  # bookkeeping never fails a sync; the key expires anyway
            log.warning("could not delete the progress state of %s: %s", req.id, e)


@app.task(name=c.SYNC, bind=True, base=Guarded)
def sync_(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _sync_task(self, c.SYNC, kwargs, _legacy_sync)


@app.task(name=c.SYNCONLY, bind=True, base=Guarded)
def synconly(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _sync_task(self, c.SYNCONLY, kwargs)


@app.task(name=c.ROLLBACK, bind=True, base=Guarded)
def rollback_(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    return _sync_task(self, c.ROLLBACK, kwargs)


class FanOut(Guarded):
    """`sync all`, which replaces itself with a chord of one `zrep.sync` per dataset: the
    members go out in Redis pipelines (`tasks.app.pipelined`), not one round trip each plus
    one for each `task-sent` event. Celery's own `on_replace` publishes with `sig.delay()`."""

    def on_replace(self, sig: Any) -> Any:
        if self.request.is_eager:
            return super().on_replace(sig)
        with pipelined(self.app):
            sig.delay()
        raise Ignore("Replaced by new task")


@app.task(name=c.SYNC_ALL, bind=True, base=FanOut)
def sync_all(self: Task[Any, Any], /, **kwargs: Any) -> Any:
    """Fan out one `zrep.sync` per master fs of this host; a chord collects one summary.

    The members run on this host's queue, so the worker's concurrency caps parallel sends.
    They return failure records instead of raising, so one failed dataset never stops the
    summary. They store no result of their own (`ignore_result`): each one's outcome reaches
    the summary through the chord's own list (Celery's Redis backend adds it there whether or
    not the result is stored, and deletes the list once the summary is sent), the summary
    keeps them all, and a run over 10,000 datasets leaves one result in Redis, not 10,001
    for `result_expires` (7 days). A member's STARTED state is not stored either (Flower sees
    it from the events); its PROGRESS state is, while its stream runs (`_forget_progress`).
    """
    started = time.time()
    try:
        args = c.validate(c.SYNC_ALL, kwargs)
        assert isinstance(args, c.SyncAllArgs)
        allow(c.SYNC_ALL, args)
        ctx = _context(self, args, DeferredPeer())
        pairs = masters_by_tag(ctx) if args.every_tag else [(args.tag, fs) for fs in masters(ctx)]
    except ZrepqError as e:  # fail with the contract's record, as every other task does
        log.error("%s failed: %s", c.SYNC_ALL, e.message)
        raise TaskFailed(e.to_record()) from None
    # The records of datasets this host no longer has as masters go (`tasks/ops.py`).
    forget_unlisted(args.host, None if args.every_tag else {args.tag}, pairs, started)
    if not pairs:
        return c.ok(summary([], args.host, started))
    base = {**args.model_dump(exclude={"every_tag"}), "record_errors": True}
    queue = c.queue_for(args.host)
    header = [_member(base, tag, fs, queue) for tag, fs in pairs]
    callback = app.signature(
        c.SYNC_ALL_SUMMARY, kwargs={"host": args.host, "started": started}, queue=queue
    )
    log.info(
        "%s on %s: %d datasets listed in %.2f s, fanning out",
        c.SYNC_ALL,
        args.host,
        len(header),
        time.time() - started,
    )
    return self.replace(chord(header, callback))


def _member(base: dict[str, Any], tag: str, fs: str, queue: str, *, on: Celery = app) -> Any:
    """One dataset's `zrep.sync` of a `sync all`. What logs and Flower show of its arguments
    is given: Celery's `saferepr` of them costs a quarter of a member's publishing and gives
    the same text for these flat arguments (`producer.api.Producer.send` does the same)."""
    kwargs = {**base, "fs": fs, "tag": tag}
    return on.signature(
        c.SYNC,
        kwargs=kwargs,
        queue=queue,
        immutable=True,
        ignore_result=True,
        argsrepr="()",
        kwargsrepr=repr(kwargs),
    )


@app.task(name=c.SYNC_ALL_SUMMARY)
def sync_all_summary(results: list[dict[str, Any]], host: str, started: float) -> dict[str, Any]:
    return c.ok(summary(results, host, started))


@app.task(name=c.EXPIRE, bind=True, base=Guarded)
def expire(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    def body(ctx: Context, a: c.ExpireArgs) -> Any:
        fss = [a.fs] if a.fs else (list_names(ctx) if a.all else masters(ctx))
        reqs = [requests.ExpireRequest(fs=fs, local_only=a.local_only) for fs in fss]
        return [record(run(ctx, req)) for req in reqs]

    return _run(self, c.EXPIRE, kwargs, body)


def _role(task: Task[Any, Any], name: str, kwargs: dict[str, Any]) -> Any:
    """failover/takeover. The result carries `sides`: what each host's half did, in order.

    The half that hands over to the other host's worker (`task.replace`) passes its side on
    in the next task's `prior`, so the final result, which is the last half's, reports both
    (`hosta:pool/fs now standby`, `hostb:pool/fs now master`). A takeover that only asks the
    master to fail over did nothing itself and adds no side.
    """
    peer = DeferredPeer()

    def body(ctx: Context, a: c.FailoverArgs | c.TakeoverArgs) -> Any:
        res = run(ctx, a).to_dict()
        forwarded = name == c.TAKEOVER and not a.local_only and peer.next is not None
        mine = [] if forwarded else [_side(res)]
        return {**res, "sides": [p.model_dump() for p in a.prior] + mine}

    result = _run(task, name, kwargs, body, peer=peer)
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


@app.task(name=c.FAILOVER, bind=True, base=Guarded)
def failover(self: Task[Any, Any], /, **kwargs: Any) -> Any:
    return _role(self, c.FAILOVER, kwargs)


@app.task(name=c.TAKEOVER, bind=True, base=Guarded)
def takeover(self: Task[Any, Any], /, **kwargs: Any) -> Any:
    return _role(self, c.TAKEOVER, kwargs)


@app.task(name=c.STATUS, bind=True, base=Guarded)
def status_(self: Task[Any, Any], /, **kwargs: Any) -> dict[str, Any]:
    def body(ctx: Context, a: c.StatusArgs) -> Any:
        req = requests.narrow(requests.StatusRequest, a)
        each = tags(ctx) if a.every_tag else [ctx.tag]
        rows = [row for t in each for row in status(ctx.with_tag(t), req)]
        fmt = ctx.config.dateformat
        text = status_text(rows, verbose=a.verbose, all_fs=a.all, dateformat=fmt)
        return {"rows": [r.to_dict() for r in rows], "text": text}

    return _run(self, c.STATUS, kwargs, body)


# Set once the worker is ready (and has tried to register): event heartbeats start before
# that, and a fresh worker's first heartbeat must not read as "Redis lost its data".
_ready = threading.Event()


@worker_ready.connect
def _register_host(sender: Any = None, **_: Any) -> None:
    """Record this host in the registry (`zrepq:host:HOST`), so producers know which hosts
    exist. Each worker writes its own host's key only (its Redis user may write no other)."""
    import redis

    _ready.set()
    host = this_host()
    entry = {
        "queue": c.queue_for(host),
        "node": getattr(sender, "hostname", None),
        "registered": time.time(),
    }
    try:
        registry.register(settings_of(app).redis(), host, entry)
    except redis.RedisError as e:
        log.error("could not register host %s in %s: %s", host, c.host_key(host), e)


@lru_cache(maxsize=1)
def _registry_client(pid: int) -> Any:
    return settings_of(app).redis()


@heartbeat_sent.connect
def _stay_registered(sender: Any = None, **_: Any) -> None:
    """Register again when the registry lost this host.

    A Redis restarted without its data forgets the registry while the workers reconnect by
    themselves, and producers refuse hosts that are not registered. The worker's event
    heartbeat (every 2 s) checks with one EXISTS.
    """
    import types

    import redis

    if not _ready.is_set():
        return
    host = this_host()
    try:
        if registry.is_registered(_registry_client(os.getpid()), host):
            return
    except redis.RedisError:
        return
    log.warning(
        "host %s is missing from the registry (%s; Redis lost its data?); registering again",
        host,
        c.host_key(host),
    )
    node = getattr(getattr(sender, "eventer", None), "hostname", None)
    _register_host(types.SimpleNamespace(hostname=node))
