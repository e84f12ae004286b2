"""sync, synconly and refresh (pull): one pair brought up to date, top to bottom.

A sync, step by step (all under the source fs's lease, and for refresh the destination's too):
1. read the source once, under its lease and zrep's global lock (properties, zrep's lock
   marks, snapshots: `steps.lock_reading`), then the destination; refuse if the destination
   is master (split brain);
2. plan from both snapshot lists (`plan.py`): mark snapshots that already landed as sent,
   resume or abort a partial receive (`resume.py`), refuse diverged histories;
3. snapshot `TAG_<seq+1>`, stream `send -I lastsent new | recv` (no `recv -F` unless asked:
   the snapshot sequence is what fences a stale lease holder);
4. on failure, first check by guid whether the snapshot landed anyway; only if not, rename it
   `_unsent` (or keep it for a resumable receive);
5. set `TAG:sent` on both sides, move the holds, expire both sides (from the lists read in
   steps 1-2 plus the snapshot sent, after a plain receive: `expire.JustSent`).

`sync fs@snap` (a deliberate rollback) is `rollback.py`; failover's final sync is `replicate`
here, called by `roles.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

from . import bookmarks, crypto, steps
from . import commands as cmd
from . import resume as resumable
from .context import Context
from .errors import (
    DatasetMissing,
    LockHeld,
    LockLost,
    NotConfigured,
    PartialReceiveInWay,
    SplitBrain,
    StateError,
    ZrepqError,
)
from .expire import JustSent, expire_pair
from .model import DatasetInfo, Snapshot, last_sent, latest_zrep
from .names import validate_dataset, validate_host
from .pause import check_not_paused, clear_error, record_error
from .plan import SyncPlan, is_unchanged, plan_sync
from .ports import LockHandle
from .requests import RefreshRequest, SynconlyRequest, SyncRequest
from .results import SyncResult
from .zfs import Link, ZfsHost

# Which zrep command a replication runs for: it decides zrep's lines and the expire after it.
Kind = Literal["sync", "synconly", "refresh", "failover"]


@dataclass(frozen=True)
class Run:
    """How one replication goes: for which command, and the request's receive options."""

    kind: Kind
    force: bool = False
    resume: bool | None = None  # None: the config's
    changed_only: bool = False

    @property
    def make_snapshot(self) -> bool:
        return self.kind != "synconly"


def sync(ctx: Context, req: SyncRequest) -> SyncResult:
    run = Run("sync", req.force, req.resume, req.changed_only)
    return _push(ctx, req.fs, run, ignore_pause=req.ignore_pause, quiet_secs=req.quiet_secs)


def synconly(ctx: Context, req: SynconlyRequest) -> SyncResult:
    run = Run("synconly", req.force, req.resume)
    return _push(ctx, req.fs, run, ignore_pause=req.ignore_pause)


def _push(
    ctx: Context, fs: str, run: Run, *, ignore_pause: bool, quiet_secs: int | None = None
) -> SyncResult:
    def check(info: DatasetInfo) -> None:
        _check_master(ctx, fs, info, ignore_pause=ignore_pause)

    try:
        # One read of the source for the whole sync: its properties, zrep's lock marks and
        # its snapshots, under the lease and zrep's global lock (`steps.lock_reading`); the
        # checks above refuse on it before any lock mark is set.
        books = bookmarks.enabled(ctx)
        with steps.lock_reading(ctx, fs, "sync", check, bookmarks=books) as (handle, info, read):
            dest_host, dest_fs = pair_dest(info.dest_host, info.dest_fs, fs)
            link = Link(ctx.local, fs, ctx.zfs(dest_host), dest_fs)
            return replicate(ctx, link, handle, info, run, source=read)
    except LockHeld:
        if quiet_secs is None:
            raise
        return _skip_busy(ctx, ctx.local, fs, quiet_secs, ignore_pause=ignore_pause)


def _check_master(ctx: Context, fs: str, info: DatasetInfo, *, ignore_pause: bool) -> None:
    """zrep's refusals before a sync, in its order: not master, master elsewhere; paused."""
    if not info.is_master:
        # zrep's own words, for a plain fs as for a standby (its first check is TAG:master).
        error = StateError if info.configured else NotConfigured
        raise error(f"{fs} not master. Cannot sync", dataset=fs, host=ctx.host)
    if info.src_host != ctx.host:
        raise StateError(
            f"we are not master host for {fs}: master is {info.src_host}, we are {ctx.host}",
            dataset=fs,
            host=ctx.host,
        )
    pair_dest(info.dest_host, info.dest_fs, fs)
    if not ignore_pause:
        check_not_paused(info, ctx.host)


def _skip_busy(
    ctx: Context, local: ZfsHost, fs: str, quiet_secs: int, *, ignore_pause: bool
) -> SyncResult:
    """zrep's -q: a locked fs synced within `quiet_secs` is skipped, with zrep's line."""
    info, snaps = local.state(fs)
    _check_master(ctx, fs, info, ignore_pause=ignore_pause)
    dest_host, dest_fs = pair_dest(info.dest_host, info.dest_fs, fs)
    sent = last_sent(snaps, ctx.tag)
    if sent is None or sent.sent is None:
        raise LockHeld(f"quiet mode set, but no last snap for {fs}", dataset=fs) from None
    elapsed = int(time.time()) - sent.sent
    if elapsed > quiet_secs:
        raise LockHeld(
            f"quiet time limit of {quiet_secs} seconds exceeded for busy fs {fs}",
            dataset=fs,
            host=ctx.host,
        ) from None
    now = time.strftime("%a %b %e %H:%M:%S %Z %Y")  # `date`'s default output, as zrep's
    ctx.say(f"Quiet mode: skipping busy fs {fs} at {now}", fs)
    return SyncResult(
        fs, ctx.host, dest_host, dest_fs, "skipped", snapshot=sent.name,
        message="locked; synced recently",
    )  # fmt: skip


def refresh(ctx: Context, req: RefreshRequest) -> SyncResult:
    """Pull mode, run on the destination: snapshot on the master, stream it here."""
    fs, local = req.fs, ctx.local
    info = local.require(fs)
    if info.is_master:
        raise StateError(f"Sorry, you cant run refresh on a master mode fs {fs}", dataset=fs)
    src_host, src_fs = pair_dest(info.src_host, info.src_fs, fs)
    src = ctx.zfs(src_host)
    sinfo = src.require(src_fs)
    if not sinfo.is_master:
        raise StateError(f"{src_host}:{src_fs} is not master; nothing to refresh from", dataset=fs)
    check_not_paused(sinfo, src_host)
    run = Run("refresh", req.force, req.resume)
    with steps.lock(ctx, [(src_host, src_fs), (ctx.host, fs)], "refresh", local_info=info) as h:
        return replicate(ctx, Link(src, src_fs, local, fs), h, sinfo, run)


def replicate(
    ctx: Context,
    link: Link,
    handle: LockHandle,
    src_info: DatasetInfo,
    run: Run,
    *,
    source: steps.SourceRead | None = None,
) -> SyncResult:
    """Steps 1-5 above for one pair, keeping the master's error flag up to date.

    A failed sync raises the flag (`zrepq:TAG:last-error*` on the master fs); the next good
    one lowers it, together with the mark of a deliberate rollback.
    """
    state: dict[str, str] = {}
    try:
        result = _replicate(ctx, link, handle, src_info, run, state, source)
    except (LockHeld, LockLost):
        # Someone else is syncing it, or took over our lease: neither is a failure of the
        # pair, and after a lost lease we must not write anything more (fencing).
        raise
    except ZrepqError as err:
        record_error(link.src, link.src_fs, state.get("snapshot"), err)
        raise
    clear_error(link.src, src_info)
    return result


def _replicate(
    ctx: Context,
    link: Link,
    handle: LockHandle,
    src_info: DatasetInfo,
    run: Run,
    state: dict[str, str],  # the snapshot being sent, for the error flag
    source: steps.SourceRead | None,  # the source's, when read under this lock already
) -> SyncResult:
    t0 = time.monotonic()
    src, src_fs, dst, dst_fs = link.src, link.src_fs, link.dst, link.dst_fs
    resume = ctx.config.resume if run.resume is None else run.resume
    resume = resume and resumable.supported(dst.host, dst_fs)
    try:
        # The destination's properties and snapshots in one call (one SSH session).
        dinfo, dsnaps = dst.state(dst_fs)
    except DatasetMissing:
        raise StateError(
            f"destination {dst.host}:{dst_fs} does not exist: initialize the pair first",
            dataset=src_fs,
            host=dst.host,
        ) from None
    if run.kind != "refresh" and dinfo.is_master:
        raise SplitBrain(
            f"Other side ({dst.host}:{dst_fs}) is also master. Split brain detected",
            dataset=src_fs,
            host=dst.host,
        )
    crypto.check_destination(ctx, src_info, dst.host, dinfo)
    result = SyncResult(src_fs, src.host, dst.host, dst_fs, "synced")
    if source is not None:  # read under this lock, bookmarks too when the cursor is on
        ssnaps, books = source.snapshots, source.bookmarks
    else:
        ssnaps, books = bookmarks.read_source(ctx, src, src_fs)  # one call, bookmarks or not
    plan = bookmarks.plan_from_cursor(
        ctx, src_fs, dst_fs, ssnaps, books, dsnaps, force=run.force, resume=resume,
        dest_token=dinfo.resume_token, dest_written=dinfo.written,
    ) or plan_sync(
        ssnaps, dsnaps, ctx.tag, src_fs=src_fs, dst_fs=dst_fs, force=run.force, resume=resume,
        dest_token=dinfo.resume_token, dest_written=dinfo.written,
    )  # fmt: skip

    plan, ssnaps, dsnaps = _settle(ctx, link, handle, plan, run, result, ssnaps, dsnaps)
    base = plan.base

    if run.make_snapshot and run.changed_only and is_unchanged(ssnaps, base, src_info.written):
        ctx.say(f"No changes found in {src_fs}. Updating timestamp only", src_fs, level="detail")
        src.set(base.name, {f"{ctx.tag}:sent": str(int(time.time()))})
        steps.move_holds(ctx, link, base.short, src_snaps=ssnaps, dst_snaps=dsnaps)
        bookmarks.ensure(ctx, link, base, books)
        result.status, result.snapshot = "unchanged", base.name
        return _finish(ctx, run, link, src_info, None, result, t0)

    steps.check(handle)
    if run.make_snapshot:
        new_name = f"{src_fs}@{bookmarks.next_snapname(ssnaps, books, ctx.tag)}"
        src.snapshot(new_name, recursive=ctx.config.recursive)
    else:
        latest = latest_zrep(ssnaps, ctx.tag)
        if latest is None or latest.guid == base.guid:
            ctx.say(f"{base.name} already sent", src_fs)
            result.status, result.snapshot = "uptodate", base.name
            return _finish(ctx, run, link, src_info, None, result, t0)
        new_name = latest.name
    if bookmarks.is_cursor(base):
        bookmarks.announce(ctx, link, base, result)
    if run.kind != "refresh":  # zrep's refresh pulls without a word
        ctx.say(f"sending {new_name} to {dst.host}:{dst_fs}", src_fs)
    new_short = new_name.split("@", 1)[1]
    state["snapshot"] = new_name
    clean_send = not plan.landed  # a plain send from the lists read above: see the expire

    for attempt in (1, 2):
        try:
            nbytes, _ = resumable.stream_into(
                ctx,
                link,
                crypto.send_args(ctx, src_info, cmd.incremental(ctx.config, base.name, new_name)),
                cmd.sync_recv_flags(ctx.config, force=plan.force),
                resume=resume,
                snapshot=new_name,
                base=base.name,
                handle=handle,
            )
            result.bytes_sent += nbytes
            break
        except ZrepqError as err:
            if isinstance(err, LockLost) or handle.lost.is_set():
                raise  # the lease is someone else's now: no rename, no marks, nothing
            if _landed(link, new_short):
                clean_send = False
                ctx.say(
                    f"the send of {new_name} reported an error but the snapshot is on "
                    f"{dst.host}:{dst_fs} (same guid): completing",
                    src_fs,
                    warning=True,
                )
                break
            raced = isinstance(err, PartialReceiveInWay) and resume and attempt == 1
            token = _token_now(dst, dst_fs) if raced else None
            if token is None:
                kept = resume and _partial_left(dst, dst_fs)
                _after_failed_send(ctx, src, new_name, err, resume=kept, made=run.make_snapshot)
                raise
        # A receive still running when the standby was read (a killed worker's, whose task
        # Celery ran again at once) saved its partial state since, and refused ours: finish
        # it, then send this snapshot again from the base that gives.
        ctx.say(
            f"a receive into {dst.host}:{dst_fs} that was still running when this sync read "
            f"it has left a partial receive; resuming it, then sending {new_name} again",
            src_fs,
            warning=True,
        )
        steps.check(handle)
        plan, ssnaps, dsnaps = _settle(
            ctx, link, handle, replace(plan, resume_token=token), run, result, ssnaps, dsnaps
        )
        base, clean_send = plan.base, False

    steps.check(handle)
    steps.move_holds(ctx, link, new_short, src_snaps=ssnaps, dst_snaps=dsnaps, sent=True)
    bookmarks.advance(ctx, link, new_short, books)
    result.snapshot, result.base = new_name, base.name
    # Both sides' snapshots as read at the start, under the same lease, plus the one just
    # sent: neither side is read again. Not after `recv -F`, which may have destroyed some
    # of the standby's snapshots listed at the start.
    just_sent = (
        JustSent(ssnaps, new_name, int(time.time()), dst_fs, dinfo, dsnaps)
        if clean_send and not plan.force
        else None
    )
    return _finish(ctx, run, link, src_info, just_sent, result, t0)


def _settle(
    ctx: Context,
    link: Link,
    handle: LockHandle,
    plan: SyncPlan,
    run: Run,
    result: SyncResult,
    ssnaps: list[Snapshot],
    dsnaps: list[Snapshot],
) -> tuple[SyncPlan, list[Snapshot], list[Snapshot]]:
    """Step 2's writes: abort or finish the destination's partial receive as planned, and
    record the snapshots that landed without being marked sent. Returns the plan to send
    from and both sides' snapshots as they are now."""
    dst, dst_fs, src_fs = link.dst, link.dst_fs, link.src_fs
    if plan.abort_token:
        ctx.say(
            f"aborting the partial receive on {dst.host}:{dst_fs} (resume is off)",
            src_fs,
            warning=True,
        )
        dst.abort_resume(dst_fs)
    if plan.resume_token:
        steps.check(handle)
        plan, ssnaps, dsnaps = resumable.finish_partial(
            ctx, link, handle, plan, force=run.force, result=result
        )
    if plan.landed:
        ctx.say(
            f"{', '.join(s.short for s in plan.landed)} already on {dst.host}:{dst_fs}; "
            "recording completion",
            src_fs,
            level="notice",
        )
        steps.mark_sent(ctx, link, plan.landed)
        result.completed += [s.name for s in plan.landed]
    return plan, ssnaps, dsnaps


def _finish(
    ctx: Context,
    run: Run,
    link: Link,
    info: DatasetInfo,
    just_sent: JustSent | None,
    result: SyncResult,
    t0: float,
) -> SyncResult:
    """Expire both sides where zrep does, with zrep's lines; the result, timed.

    sync says "Expiring zrep snaps on SRC" and then the remote part ("Also running expire
    on HOST:DST now...", the far side's "Expiring zrep snaps on DST"); synconly only the
    remote part, whether or not anything was sent; refresh only the master's line (zrep runs
    `expire -L` there); failover's final sync expires nothing (zrep's neither).
    """
    if not ctx.config.skip_expire and run.kind != "failover":
        if run.kind in ("sync", "refresh"):
            ctx.say(f"Expiring zrep snaps on {link.src_fs}", link.src_fs)
        announce = run.kind != "refresh"
        exp = expire_pair(ctx, link, info=info, just_sent=just_sent, announce=announce)
        result.expired = exp.destroyed + exp.remote_destroyed
    result.seconds = time.monotonic() - t0
    return result


# ---- helpers ------------------------------------------------------------------------------


def pair_dest(host: str | None, fs: str | None, name: str) -> tuple[str, str]:
    """The other side of `name`'s pair, from its properties, validated like any input."""
    if not host or not fs:
        raise NotConfigured(f"Problem getting zrep properties for fs {name}", dataset=name)
    return validate_host(host), validate_dataset(fs)


def _landed(link: Link, short: str) -> bool:
    """Did `src_fs@short` reach the destination (same guid), whatever the pipeline said?"""
    try:
        guid = next((s.guid for s in link.src.snapshots(link.src_fs) if s.short == short), None)
        return guid is not None and any(s.guid == guid for s in link.dst.snapshots(link.dst_fs))
    except ZrepqError:
        return False  # cannot tell (host unreachable): treat as not sent, the safe side


def _token_now(dst: ZfsHost, dst_fs: str) -> str | None:
    """The destination's resume token now, if it has one (unknown counts as none)."""
    try:
        return dst.info(dst_fs).resume_token
    except ZrepqError:
        return None


def _partial_left(dst: ZfsHost, dst_fs: str) -> bool:
    """Is there a partial receive to resume? Not when the stream was cut before its first
    record (or never started); unknown (the host is unreachable) counts as yes: keep."""
    try:
        return dst.info(dst_fs).resume_token is not None
    except ZrepqError:
        return True


def _after_failed_send(
    ctx: Context, src: ZfsHost, new_name: str, err: ZrepqError, *, resume: bool, made: bool
) -> None:
    if resume:
        err.message += (
            f"; {new_name} kept for a resumable receive: the next sync with resume resumes it"
        )
        return
    if not made:
        return
    try:
        if ctx.config.rename_unsent:
            src.rename(new_name, f"{new_name}_unsent", recursive=ctx.config.recursive)
            err.message += f"; renamed {new_name} to {new_name}_unsent"
        else:
            src.destroy(new_name, recursive=ctx.config.recursive)
    except ZrepqError as e2:
        err.message += f"; also failed to set aside {new_name}: {e2}"
