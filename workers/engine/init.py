"""init: seed the standby with a full stream, exactly as zrep lays it out on disk.

Properties src-fs/src-host/dest-fs/dest-host/savecount on the source, snapshot `TAG_000000`,
`zfs send -p | zfs recv -u -o readonly=on -F`, `TAG:sent` on the snapshot, `TAG:master=yes`
last (so `sync all` never picks up a half-made pair).

Fixed on purpose (zrep issue 145): with resume on (the default), a failed init that left a
partial receive keeps it and the next init resumes it; otherwise (resume off, or nothing
arrived) it undoes what it did, and destroys the destination only if init created it.
"""

from __future__ import annotations

import time

from . import bookmarks, crypto, steps
from . import commands as cmd
from . import resume as resumable
from .admin import clear_local
from .context import Context
from .errors import DatasetMissing, StateError, ZrepqError
from .model import DatasetInfo, Snapshot, next_snapname
from .names import first_snapname
from .ports import LockHandle
from .requests import InitRequest
from .results import InitResult
from .zfs import Link, ZfsHost


def init(ctx: Context, req: InitRequest) -> InitResult:
    fs, dest_host, dest_fs = req.fs, req.dest_host, req.dest_fs
    resume = ctx.config.resume if req.resume is None else req.resume
    local = ctx.local
    info = local.info(fs)  # DatasetMissing if fs does not exist
    local.require_type(info)
    dst = ctx.zfs(dest_host)
    link = Link(local, fs, dst, dest_fs)
    t0 = time.monotonic()
    with steps.lock(ctx, [(ctx.host, fs), (dest_host, dest_fs)], "init") as handle:
        if info.configured:
            if info.is_master:
                raise StateError(
                    f"{fs} is already a zrep master ({ctx.tag}:master detected)",
                    dataset=fs,
                    host=ctx.host,
                )
            if not resume:
                raise StateError(
                    f"{fs} is at least partially configured by zrep. "
                    f"To re-initialize, first use zrep clear {fs}",
                    dataset=fs,
                    host=ctx.host,
                )
            return _resume_init(
                ctx, fs, info.dest_host or dest_host, info.dest_fs or dest_fs, handle, t0
            )
        existed = dst.exists(dest_fs)
        if existed and not req.force:
            raise StateError(
                f"{dest_host}:{dest_fs} already exists! Will not overwrite without -f",
                dataset=fs,
                host=dest_host,
            )
        ctx.say(f"Setting zrep properties on {fs}", fs)
        props = ctx.config.pair_props((ctx.host, fs), (dest_host, dest_fs))
        props[ctx.config.prop("savecount")] = str(ctx.config.save_count)
        local.set(fs, props)
        try:
            if ctx.config.create_flags:
                ctx.say("Creating  destination filesystem as separate step", fs)  # sic
                dst.create(dest_fs, ctx.config.create_flags)
            snap = f"{fs}@{first_snapname(ctx.tag)}"
            if any(s.zname(ctx.tag) for s in local.snapshots(fs)):
                # Leftovers of an earlier pair under this tag: continue the sequence.
                snap = f"{fs}@{next_snapname(local.snapshots(fs), ctx.tag)}"
            ctx.say(f"Creating snapshot {snap}", fs)
            local.snapshot(snap, recursive=ctx.config.recursive)
            ctx.say(f"Sending initial replication stream to {dest_host}:{dest_fs}", fs)
            nbytes, _ = resumable.stream_into(
                ctx,
                link,
                crypto.send_args(ctx, info, cmd.full(ctx.config, snap)),
                cmd.init_recv_flags(ctx.config),
                resume=resume,
                snapshot=snap,
                base=None,
                handle=handle,
            )
        except ZrepqError as err:
            if resume and _partial_left(dst, dest_fs):
                err.message += f". RESUME set: not clearing {fs}; run init again to resume"
                raise
            _clear_after_failure(ctx, local, fs, dst, dest_fs, destroy_remote=not existed)
            err.message = f"Error transferring to {dest_host}:{dest_fs}: {err.message}. Resetting"
            raise
        crypto.carry_pair_props(ctx, info, dst, dest_fs, props)
        _finish(ctx, link, snap, info)
    return InitResult(fs, ctx.host, dest_host, dest_fs, snap, nbytes, time.monotonic() - t0)


def _resume_init(
    ctx: Context, fs: str, dest_host: str, dest_fs: str, handle: LockHandle, t0: float
) -> InitResult:
    ctx.say(f"{fs} is at least partially configured by zrep", fs)
    local = ctx.local
    dst = ctx.zfs(dest_host)
    token = dst.info(dest_fs).resume_token if dst.exists(dest_fs) else None
    if not token:
        raise StateError(
            f"Partial init of {fs} detected but no resume token found. "
            f"Suggest you zrep clear {fs} and start again",
            dataset=fs,
        )
    ctx.say("Partially complete init detected. Attempting to resume send", fs)
    snaps = [s for s in local.snapshots(fs) if s.zname(ctx.tag)]
    if not snaps:
        raise StateError(f"{fs} has no {ctx.tag} snapshot to resume", dataset=fs)
    snap = snaps[0].name
    link = Link(local, fs, dst, dest_fs)
    nbytes, _ = steps.stream(
        ctx, link, cmd.resumed(token), ["-s", dest_fs], snapshot=snap, base=None,
        handle=handle, resumed=True,
    )  # fmt: skip
    _finish(ctx, link, snap, local.info(fs))
    return InitResult(
        fs, ctx.host, dest_host, dest_fs, snap, nbytes, time.monotonic() - t0, resumed=True
    )


def _finish(ctx: Context, link: Link, snap: str, info: DatasetInfo) -> None:
    local, fs, dst, dest_fs = link.src, link.src_fs, link.dst, link.dst_fs
    if ctx.config.create_flags:
        ctx.say(f"setting readonly on {dst.host}:{dest_fs} manually", fs)
        dst.set(dest_fs, {"readonly": "on"})
    for prop, value in ctx.config.init_remote_properties:
        dst.set(dest_fs, {prop: value})
    short = snap.split("@", 1)[1]
    mp = info.props.get("mountpoint")
    if mp is not None and mp.source == "local":
        # `send -p` carried it as a received property: the standby mounts where it likes.
        ctx.say("clearing mountpoint value for remote", fs)
        dst.inherit(dest_fs, "mountpoint")
    steps.mark_sent(ctx, link, [Snapshot(snap, "", 0, 0)])
    steps.move_holds(ctx, link, short)
    bookmarks.advance(ctx, link, short, [])  # the replication cursor's first position
    local.set(fs, {f"{ctx.tag}:master": "yes"})
    ctx.say(f"Initialization copy of {fs} to {dst.host}:{dest_fs} complete", fs)
    ctx.say("Filesystem will not be mounted", fs)  # received with -u, as zrep says


def _partial_left(dst: ZfsHost, dest_fs: str) -> bool:
    """Did the failed init leave a partial receive to resume? Nothing to resume (the stream
    never started: an unreachable host, a refused key) means a clean slate, as without resume;
    when the destination cannot be read, keep everything (the safe side)."""
    try:
        return dst.info(dest_fs).resume_token is not None
    except DatasetMissing:
        return False
    except ZrepqError:
        return True


def _clear_after_failure(
    ctx: Context, local: ZfsHost, fs: str, dst: ZfsHost, dest_fs: str, *, destroy_remote: bool
) -> None:
    """Back to the state before init; the destination only if init created it."""
    try:
        if destroy_remote and dst.exists(dest_fs):
            dst.destroy(dest_fs, recursive=True)
    except ZrepqError as e:
        ctx.say(f"could not remove the partial {dst.host}:{dest_fs}: {e}", fs, warning=True)
    try:
        clear_local(ctx, local, fs)
    except ZrepqError as e:
        ctx.say(f"could not clear zrep state from {fs}: {e}", fs, warning=True)
