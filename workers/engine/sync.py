"""sync, synconly, refresh (pull) and `sync fs@snap`.

A sync, step by step (all under the source fs's lease, and for refresh the destination's too):
1. read the pair's properties on both sides; refuse if the destination is master (split brain);
2. plan from both snapshot lists (`plan.py`): mark snapshots that already landed as sent,
   resume or abort a partial receive, refuse diverged histories;
3. snapshot `TAG_<seq+1>`, stream `send -I lastsent new | recv` (no `recv -F` unless asked:
   the snapshot sequence is what fences a stale lease holder);
4. on failure, first check by guid whether the snapshot landed anyway; only if not, rename it
   `_unsent` (or keep it for a resumable receive);
5. set `TAG:sent` on both sides, move the holds, expire both sides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from . import resume as resumable
from .errors import (
    Conflict,
    LockHeld,
    LockLost,
    NotConfigured,
    PipelineError,
    SplitBrain,
    StateError,
    ZrepqError,
)
from .expire import JustSent, expire_pair
from .model import DatasetInfo, Snapshot, last_sent, latest_zrep, next_snapname
from .names import validate_dataset, validate_host, validate_snapshot
from .pause import check_not_paused, clear_error, record_error, record_rollback
from .plan import SyncPlan, is_unchanged, plan_sync
from .ports import LockHandle
from .results import SyncResult
from .zfs import DatasetMissing, ZfsHost

if TYPE_CHECKING:
    from .engine import Engine

# Which zrep command a replication runs for: it decides zrep's lines and the expire after it.
Kind = Literal["sync", "synconly", "refresh", "failover"]


def sync(
    eng: Engine,
    fs: str,
    *,
    force: bool = False,
    resume: bool | None = None,
    changed_only: bool = False,
    quiet_secs: int | None = None,
    make_snapshot: bool = True,
    ignore_pause: bool = False,
) -> SyncResult:
    validate_dataset(fs)
    if quiet_secs is not None and quiet_secs < 30:
        raise StateError("-q must use value greater than 30")
    local = eng.local
    info = local.info(fs)  # DatasetMissing if there is no such dataset
    if not info.is_master:
        # zrep's own words, for a plain fs as for a standby (its first check is TAG:master).
        error = StateError if info.configured else NotConfigured
        raise error(f"{fs} not master. Cannot sync", dataset=fs, host=eng.host)
    if info.src_host != eng.host:
        raise StateError(
            f"we are not master host for {fs}: master is {info.src_host}, we are {eng.host}",
            dataset=fs,
            host=eng.host,
        )
    dest_host, dest_fs = _pair_dest(info.dest_host, info.dest_fs, fs)
    if not ignore_pause:
        check_not_paused(info, eng.host)
    try:
        with eng.lock([(eng.host, fs)], "sync", local_info=info) as handle:
            return replicate(
                eng,
                local,
                fs,
                eng.zfs(dest_host),
                dest_fs,
                handle,
                force=force,
                resume=resume,
                changed_only=changed_only,
                make_snapshot=make_snapshot,
                src_info=info,
                kind="sync" if make_snapshot else "synconly",
            )
    except LockHeld:
        if quiet_secs is None:
            raise
        sent = last_sent(local.snapshots(fs), eng.tag)
        if sent is None or sent.sent is None:
            raise LockHeld(f"quiet mode set, but no last snap for {fs}", dataset=fs) from None
        elapsed = int(time.time()) - sent.sent
        if elapsed > quiet_secs:
            raise LockHeld(
                f"quiet time limit of {quiet_secs} seconds exceeded for busy fs {fs}",
                dataset=fs,
                host=eng.host,
            ) from None
        now = time.strftime("%a %b %e %H:%M:%S %Z %Y")  # `date`'s default output, as zrep's
        eng.say(f"Quiet mode: skipping busy fs {fs} at {now}", fs)
        return SyncResult(
            fs,
            eng.host,
            dest_host,
            dest_fs,
            "skipped",
            snapshot=sent.name,
            message="locked; synced recently",
        )


def refresh(eng: Engine, fs: str, *, force: bool = False, resume: bool | None = None) -> SyncResult:
    """Pull mode, run on the destination: snapshot on the master, stream it here."""
    validate_dataset(fs)
    local = eng.local
    info = local.require(fs)
    if info.is_master:
        raise StateError(f"Sorry, you cant run refresh on a master mode fs {fs}", dataset=fs)
    src_host, src_fs = _pair_dest(info.src_host, info.src_fs, fs)
    src = eng.zfs(src_host)
    sinfo = src.require(src_fs)
    if not sinfo.is_master:
        raise StateError(f"{src_host}:{src_fs} is not master; nothing to refresh from", dataset=fs)
    check_not_paused(sinfo, src_host)
    with eng.lock([(src_host, src_fs), (eng.host, fs)], "refresh", local_info=info) as handle:
        return replicate(
            eng,
            src,
            src_fs,
            local,
            fs,
            handle,
            force=force,
            resume=resume,
            make_snapshot=True,
            src_info=sinfo,
            check_dest_master=False,
            kind="refresh",
        )


def replicate(
    eng: Engine,
    src: ZfsHost,
    src_fs: str,
    dst: ZfsHost,
    dst_fs: str,
    handle: LockHandle,
    *,
    src_info: DatasetInfo,
    **kw: Any,
) -> SyncResult:
    """Steps 1-5 above for one pair, keeping the master's error flag up to date.

    A failed sync raises the flag (`zrepq:TAG:last-error*` on the master fs); the next good
    one lowers it, together with the mark of a deliberate rollback.
    """
    state: dict[str, str] = {}
    try:
        result = _replicate(
            eng,
            src,
            src_fs,
            dst,
            dst_fs,
            handle,
            src_info_written=src_info.written,
            src_info=src_info,
            state=state,
            **kw,
        )
    except (LockHeld, LockLost):
        # Someone else is syncing it, or took over our lease: neither is a failure of the
        # pair, and after a lost lease we must not write anything more (fencing).
        raise
    except ZrepqError as err:
        record_error(src, src_fs, state.get("snapshot"), err)
        raise
    clear_error(src, src_info)
    return result


def _replicate(
    eng: Engine,
    src: ZfsHost,
    src_fs: str,
    dst: ZfsHost,
    dst_fs: str,
    handle: LockHandle,
    *,
    force: bool = False,
    resume: bool | None = None,
    changed_only: bool = False,
    make_snapshot: bool = True,
    src_info_written: int | None = None,
    src_info: DatasetInfo | None = None,
    check_dest_master: bool = True,
    kind: Kind = "sync",
    state: dict[str, str],
) -> SyncResult:
    t0 = time.monotonic()
    resume = eng.config.resume if resume is None else resume
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
    if check_dest_master and dinfo.is_master:
        raise SplitBrain(
            f"Other side ({dst.host}:{dst_fs}) is also master. Split brain detected",
            dataset=src_fs,
            host=dst.host,
        )
    result = SyncResult(src_fs, src.host, dst.host, dst_fs, "synced")
    ssnaps = src.snapshots(src_fs)
    plan = _plan(
        eng,
        ssnaps,
        dsnaps,
        src_fs,
        dst_fs,
        dinfo.resume_token,
        dinfo.written,
        force=force,
        resume=resume,
    )

    if plan.abort_token:
        eng.say(
            f"aborting the partial receive on {dst.host}:{dst_fs} (resume is off)",
            src_fs,
            warning=True,
        )
        dst.abort_resume(dst_fs)
    if plan.resume_token:
        eng.check(handle)
        plan, ssnaps, dsnaps = _resume(
            eng, src, src_fs, dst, dst_fs, handle, plan, force=force, result=result
        )
    if plan.landed:
        eng.say(
            f"{', '.join(s.short for s in plan.landed)} already on {dst.host}:{dst_fs}; "
            "recording completion",
            src_fs,
            level="notice",
        )
        eng.mark_sent(src, src_fs, dst, dst_fs, plan.landed)
        result.completed = [s.name for s in plan.landed]
    base = plan.base

    if make_snapshot and changed_only and is_unchanged(ssnaps, base, src_info_written):
        eng.say(f"No changes found in {src_fs}. Updating timestamp only", src_fs, level="detail")
        src.set(base.name, {f"{eng.tag}:sent": str(int(time.time()))})
        eng.move_holds(src, src_fs, dst, dst_fs, base.short, src_snaps=ssnaps, dst_snaps=dsnaps)
        result.status, result.snapshot = "unchanged", base.name
        _expire_after(eng, kind, src, src_fs, dst, dst_fs, src_info, None, result)
        result.seconds = time.monotonic() - t0
        return result

    eng.check(handle)
    if make_snapshot:
        new_name = f"{src_fs}@{next_snapname(ssnaps, eng.tag)}"
        src.snapshot(new_name, recursive=eng.config.recursive)
    else:
        latest = latest_zrep(ssnaps, eng.tag)
        if latest is None or latest.guid == base.guid:
            eng.say(f"{base.name} already sent", src_fs)
            result.status, result.snapshot = "uptodate", base.name
            _expire_after(eng, kind, src, src_fs, dst, dst_fs, src_info, None, result)
            result.seconds = time.monotonic() - t0
            return result
        new_name = latest.name
    if kind != "refresh":  # zrep's refresh pulls without a word
        eng.say(f"sending {new_name} to {dst.host}:{dst_fs}", src_fs)
    new_short = new_name.split("@", 1)[1]
    state["snapshot"] = new_name
    clean_send = not plan.landed  # a plain send from the lists read above: see the expire

    send_args = [*_send_flags(eng), eng.config.inc_flag, base.name, new_name]
    try:
        nbytes, _ = resumable.stream_into(
            eng,
            src,
            send_args,
            dst,
            _recv_flags(eng, force=plan.force),
            dst_fs,
            resume=resume,
            dataset=src_fs,
            snapshot=new_name,
            base=base.name,
            handle=handle,
        )
        result.bytes_sent += nbytes
    except ZrepqError as err:
        if isinstance(err, LockLost) or handle.lost.is_set():
            raise  # the lease is someone else's now: no rename, no marks, nothing
        if not _landed(src, src_fs, dst, dst_fs, new_short):
            kept = resume and _partial_left(dst, dst_fs)
            _after_failed_send(eng, src, new_name, err, resume=kept, made=make_snapshot)
            raise
        clean_send = False
        eng.say(
            f"the send of {new_name} reported an error but the snapshot is on "
            f"{dst.host}:{dst_fs} (same guid): completing",
            src_fs,
            warning=True,
        )

    eng.check(handle)
    new_snap = Snapshot(new_name, "", 0, 0)
    eng.mark_sent(src, src_fs, dst, dst_fs, [new_snap])
    eng.move_holds(src, src_fs, dst, dst_fs, new_short, src_snaps=ssnaps, dst_snaps=dsnaps)
    result.snapshot, result.base = new_name, base.name
    # The source's savecount and snapshots as read at the start, under the same lease, plus
    # the one just sent: only the destination is read again.
    just_sent = JustSent(ssnaps, new_name, int(time.time())) if clean_send else None
    _expire_after(eng, kind, src, src_fs, dst, dst_fs, src_info, just_sent, result)
    result.seconds = time.monotonic() - t0
    return result


def _expire_after(
    eng: Engine,
    kind: Kind,
    src: ZfsHost,
    src_fs: str,
    dst: ZfsHost,
    dst_fs: str,
    info: DatasetInfo | None,
    just_sent: JustSent | None,
    result: SyncResult,
) -> None:
    """Expire both sides where zrep does, with zrep's lines.

    sync says "Expiring zrep snaps on SRC" and then the remote part ("Also running expire
    on HOST:DST now...", the far side's "Expiring zrep snaps on DST"); synconly only the
    remote part, whether or not anything was sent; refresh only the master's line (zrep runs
    `expire -L` there); failover's final sync expires nothing (zrep's neither).
    """
    if eng.config.skip_expire or kind == "failover":
        return
    if kind in ("sync", "refresh"):
        eng.say(f"Expiring zrep snaps on {src_fs}", src_fs)
    exp = expire_pair(
        eng, src, src_fs, dst, dst_fs, info=info, just_sent=just_sent, announce=kind != "refresh"
    )
    result.expired = exp.destroyed + exp.remote_destroyed


def sync_to_snapshot(
    eng: Engine, snapshot: str, *, before_rollback: Callable[[], None] | None = None
) -> SyncResult:
    """`zrep sync fs@zrep_NNNNNN`: roll the destination back to that snapshot.

    Newer snapshots on the destination are destroyed (their holds released first); newer local
    snapshots lose their `TAG:sent`, so the next sync starts from this one. zrep's warning
    comes first; then `before_rollback` (the CLI's pause: the engine does not sleep).
    """
    fs, short = validate_snapshot(snapshot)
    local = eng.local
    info = local.require(fs)
    zname = next((s.zname(eng.tag) for s in local.snapshots(fs) if s.short == short), None)
    if zname is None:
        raise StateError(
            f"{snapshot} is not zrep snapshot (or does not exist). Cannot roll with it.", dataset=fs
        )
    dest_host, dest_fs = _pair_dest(info.dest_host, info.dest_fs, fs)
    dst = eng.zfs(dest_host)
    with eng.lock([(eng.host, fs)], "sync", local_info=info):
        eng.say("Validating remote snap", fs)
        ssnaps = local.snapshots(fs)
        dinfo, dsnaps = dst.state(dest_fs)
        target = next((s for s in dsnaps if s.short == short), None)
        if target is None:
            raise StateError(
                f"{dest_fs}@{short} does not exist. Cannot roll to snap", dataset=fs, host=dest_host
            )
        if dinfo.resume_token:
            # A partial receive on top of a history we are about to cut is never resumed.
            eng.say(f"aborting the partial receive on {dest_host}:{dest_fs}", fs, warning=True)
            dst.abort_resume(dest_fs)
        made = local.zfs("get", "-H", "-o", "value", "creation", snapshot).stdout.strip()
        for line in (  # zrep's warning, word for word (double spaces included)
            f"WARNING: We will be rolling back  {dest_fs}, on {dest_host}",
            f"   to  {short}, made at: {made}",
            "",
            "All newer snapshots on remote side will be destroyed",
            f"You should have paused ongoing sync jobs for {dest_fs} before continuing",
        ):
            eng.say(line, fs)
        if before_rollback is not None:
            before_rollback()
        newer_dst = [s for s in dsnaps if s.createtxg > target.createtxg]
        eng.release_stale(dst, newer_dst)  # held snapshots would stop the rollback
        dst.rollback(f"{dest_fs}@{short}", flags="-Rr")
        eng.say(f"{dest_host}:{dest_fs} rolled back successfully to {short}", fs)
        eng.say("Now cleaning up local snapshots", fs)
        local_target = next(s for s in ssnaps if s.short == short)
        for s in ssnaps:
            if s.createtxg > local_target.createtxg and s.sent is not None:
                local.inherit(s.name, f"{eng.tag}:sent")
        if local_target.sent is None:
            eng.mark_sent(local, fs, dst, dest_fs, [local_target])
        older_dst = [s for s in dsnaps if s.createtxg <= target.createtxg]
        eng.move_holds(local, fs, dst, dest_fs, short, src_snaps=ssnaps, dst_snaps=older_dst)
        record_rollback(local, fs, snapshot)
    return SyncResult(
        fs,
        eng.host,
        dest_host,
        dest_fs,
        "rolled-back",
        snapshot=snapshot,
        message=f"{dest_host}:{dest_fs} rolled back to {short}",
    )


# ---- helpers ------------------------------------------------------------------------------


def _pair_dest(host: str | None, fs: str | None, name: str) -> tuple[str, str]:
    if not host or not fs:
        raise NotConfigured(f"Problem getting zrep properties for fs {name}", dataset=name)
    return validate_host(host), validate_dataset(fs)


def _plan(
    eng: Engine,
    ssnaps: list[Snapshot],
    dsnaps: list[Snapshot],
    src_fs: str,
    dst_fs: str,
    token: str | None,
    written: int | None,
    *,
    force: bool,
    resume: bool,
) -> SyncPlan:
    return plan_sync(
        ssnaps,
        dsnaps,
        eng.tag,
        src_fs=src_fs,
        dst_fs=dst_fs,
        force=force,
        resume=resume,
        dest_token=token,
        dest_written=written,
    )


def _send_flags(eng: Engine) -> list[str]:
    return (["-R"] if eng.config.recursive else []) + list(eng.config.send_flags)


def _recv_flags(eng: Engine, *, force: bool) -> list[str]:
    """`zfs recv` flags but `-s` (`resumable.stream_into` adds it) and the dataset."""
    flags = []
    if force:
        flags.append("-F")
    if eng.config.recursive:
        # -R carries the source's zrep:master=yes: never let it arrive (zrep issue 206).
        flags += ["-x", f"{eng.tag}:master"]
    return flags


def _landed(src: ZfsHost, src_fs: str, dst: ZfsHost, dst_fs: str, short: str) -> bool:
    """Did `src_fs@short` reach the destination (same guid), whatever the pipeline said?"""
    try:
        guid = next((s.guid for s in src.snapshots(src_fs) if s.short == short), None)
        return guid is not None and any(s.guid == guid for s in dst.snapshots(dst_fs))
    except ZrepqError:
        return False  # cannot tell (host unreachable): treat as not sent, the safe side


def _partial_left(dst: ZfsHost, dst_fs: str) -> bool:
    """Is there a partial receive to resume? Not when the stream was cut before its first
    record (or never started); unknown (the host is unreachable) counts as yes: keep."""
    try:
        return dst.info(dst_fs).resume_token is not None
    except ZrepqError:
        return True


def _after_failed_send(
    eng: Engine, src: ZfsHost, new_name: str, err: ZrepqError, *, resume: bool, made: bool
) -> None:
    if resume:
        err.message += (
            f"; {new_name} kept for a resumable receive: the next sync with resume resumes it"
        )
        return
    if not made:
        return
    try:
        if eng.config.rename_unsent:
            src.rename(new_name, f"{new_name}_unsent", recursive=eng.config.recursive)
            err.message += f"; renamed {new_name} to {new_name}_unsent"
        else:
            src.destroy(new_name, recursive=eng.config.recursive)
    except ZrepqError as e2:
        err.message += f"; also failed to set aside {new_name}: {e2}"


def _resume(
    eng: Engine,
    src: ZfsHost,
    src_fs: str,
    dst: ZfsHost,
    dst_fs: str,
    handle: LockHandle,
    plan: SyncPlan,
    *,
    force: bool,
    result: SyncResult,
) -> tuple[SyncPlan, list[Snapshot], list[Snapshot]]:
    """Finish a partial receive with `send -t`; if the token is stale, abort it instead."""
    token = plan.resume_token
    assert token is not None
    eng.say(f"resuming the partial receive on {dst.host}:{dst_fs}", src_fs, level="notice")
    try:
        nbytes, _ = eng.stream(
            src,
            ["-t", token],
            dst,
            ["-s", dst_fs],
            dataset=src_fs,
            snapshot="(resumed)",
            base=None,
            dest_fs=dst_fs,
            handle=handle,
            resumed=True,
        )
        result.bytes_sent += nbytes
        result.resumed = True
    except PipelineError as err:
        if err.stderr and _stale_token(err):
            eng.say(
                f"resume token on {dst.host}:{dst_fs} is stale ({err.message}); aborting "
                "it and sending a plain incremental",
                src_fs,
                warning=True,
            )
            dst.abort_resume(dst_fs)
        else:
            raise
    ssnaps = src.snapshots(src_fs)
    dsnaps = dst.snapshots(dst_fs)
    dinfo = dst.info(dst_fs)
    new_plan = _plan(
        eng, ssnaps, dsnaps, src_fs, dst_fs, None, dinfo.written, force=force, resume=False
    )
    if dinfo.resume_token:
        raise Conflict(
            f"{dst.host}:{dst_fs} still holds a partial receive after resuming", dataset=src_fs
        )
    return new_plan, ssnaps, dsnaps


def _stale_token(err: PipelineError) -> bool:
    """The send side refused the token (its snapshot is gone, or it does not parse)."""
    text = err.stderr.lower()
    return any(
        m in text
        for m in (
            "no longer the same snapshot",
            "does not exist",
            "resume token is corrupt",
            "invalid resume token",
            "cannot resume send",
            "kernel modules must be upgraded",
        )
    )
