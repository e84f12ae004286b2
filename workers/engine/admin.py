"""Side operations: snaponly, clear, changeconfig, sentsync."""

from __future__ import annotations

import time

from . import bookmarks, steps
from .context import Context
from .errors import StateError
from .model import next_snapname, zrep_snapshots
from .requests import ChangeconfigRequest, ClearRequest, SentsyncRequest, SnaponlyRequest
from .zfs import Link, ZfsHost


def snaponly(ctx: Context, req: SnaponlyRequest) -> str:
    """Make the next zrep snapshot without sending it (the first half of sync)."""
    fs = req.fs
    local = ctx.local
    info = local.require(fs)
    if info.src_host != ctx.host:
        raise StateError(
            f"we are not master host for {fs}: master is {info.src_host}, we are {ctx.host}",
            dataset=fs,
            host=ctx.host,
        )
    with steps.lock(ctx, [(ctx.host, fs)], "snaponly", local_info=info):
        name = f"{fs}@{next_snapname(local.snapshots(fs), ctx.tag)}"
        local.snapshot(name, recursive=ctx.config.recursive)
    return name


def clear(ctx: Context, req: ClearRequest) -> list[str]:
    """Remove the tag's snapshots and properties from a local fs (not the fs itself).

    zrep's "WARNING: Removing all zrep configs ..." and its pause come before this, from the
    command line (the engine does not wait for anyone).
    """
    fs = req.fs
    local = ctx.local
    info = local.info(fs)
    # No zrep lock-pid (zrep's clear takes none); the partner's lease is checked all the same.
    with steps.lock(ctx, [(ctx.host, fs)], "clear", pair=info):
        return clear_local(ctx, local, fs)


def clear_local(ctx: Context, local: ZfsHost, fs: str) -> list[str]:
    """zrep's _clearsnaps and _clearvars, with their lines (a failed init prints them too),
    and zrepq's cursor bookmarks of the tag (returned after the snapshots)."""
    ctx.say(f"Destroying any zrep-related snapshots from {fs}", fs)
    destroyed = []
    ours = zrep_snapshots(local.snapshots(fs), ctx.tag)
    steps.release_stale(ctx, local, ours)  # a held snapshot cannot be destroyed
    for s in ours:
        local.destroy(s.name, recursive=True)
        destroyed.append(s.name)
    # zrepq's own cursors too, silently: zrep's lines stay zrep's (the caller lists them)
    destroyed += bookmarks.drop_cursors(ctx, local, fs)
    ctx.say(f"Removing zrep-related properties from {fs}", fs)
    prefix = f"{ctx.tag}:"
    for prop, source in local.props_with_source(fs):
        if prop.startswith(prefix) and source in ("local", "received"):
            local.inherit(fs, prop)
    return destroyed


def changeconfig(ctx: Context, req: ChangeconfigRequest) -> None:
    """`changeconfig [-f] fs desthost destfs` or, on the standby, `-d destfs srchost srcfs`."""
    fs, host, other_fs = req.fs, req.other_host, req.other_fs
    local = ctx.local
    if not local.exists(fs):
        raise StateError(f"filesystem {fs} must exist already", dataset=fs)
    if not req.force and not zrep_snapshots(local.snapshots(fs), ctx.tag):
        raise StateError(
            f"No pre-existing zrep snapshots found on {fs}: {fs} is not initialized for zrep. "
            "cannot change config. Use zrep init instead",
            dataset=fs,
        )
    here, there = (ctx.host, fs), (host, other_fs)
    props = ctx.config.pair_props(*((there, here) if req.dest_side else (here, there)))
    local.set(fs, {**props, ctx.config.prop("savecount"): str(ctx.config.save_count)})


def sentsync(ctx: Context, req: SentsyncRequest) -> None:
    """Recovery: declare `fs@TAG_NNNNNN` the last sent snapshot (on both sides unless -L)."""
    snapshot = req.snapshot
    fs, short = snapshot.split("@", 1)
    local = ctx.local
    snaps = local.snapshots(fs)
    target = next((s for s in snaps if s.short == short), None)
    if target is None:
        raise StateError(f"Expected snapshot for {snapshot}. Cannot continue", dataset=fs)
    if target.zname(ctx.tag) is None:
        raise StateError(
            f"{snapshot} does not follow zrep naming standards. Cannot continue", dataset=fs
        )
    info = local.info(fs)
    with steps.lock(ctx, [(ctx.host, fs)], "sentsync", local_info=info):
        for s in reversed(snaps):  # newest first, as zrep clears them
            if s.sent is not None:
                ctx.say(f"WARNING: clearing sent value from {s.name}", fs, warning=True)
                local.inherit(s.name, f"{ctx.tag}:sent")
        link = None
        if not req.local_only:
            if not info.dest_host or not info.dest_fs:
                raise StateError(f"Problem getting zrep properties for fs {fs}", dataset=fs)
            link = Link(local, fs, ctx.zfs(info.dest_host), info.dest_fs)
            steps.mark_sent(ctx, link, [target])
        else:
            local.set(target.name, {f"{ctx.tag}:sent": str(int(time.time()))})
        local.set(fs, {f"{ctx.tag}:master": "yes"})
        if link is not None:
            dst_snaps = link.dst.snapshots(link.dst_fs)
            steps.move_holds(ctx, link, short, src_snaps=snaps, dst_snaps=dst_snaps)
