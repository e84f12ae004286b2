"""`zrep sync fs@zrep_NNNNNN`: roll the destination back to that snapshot, on purpose.

Newer snapshots on the destination are destroyed (their holds released first); newer local
snapshots lose their `TAG:sent`, so the next sync starts from this one. The rollback is
marked on the master fs (`zrepq:TAG:rolled-back-*`, shown by status, not as an error) until
the next good sync.
"""

from __future__ import annotations

from collections.abc import Callable

from . import steps
from .context import Context
from .errors import StateError
from .pause import record_rollback
from .requests import RollbackRequest
from .results import SyncResult
from .sync import pair_dest
from .zfs import Link


def rollback(
    ctx: Context, req: RollbackRequest, *, before_rollback: Callable[[], None] | None = None
) -> SyncResult:
    """zrep's warning comes first; then `before_rollback` (the CLI's pause: the engine does
    not sleep); then the rollback."""
    snapshot = req.snapshot
    fs, short = snapshot.split("@", 1)
    local = ctx.local
    info = local.require(fs)
    zname = next((s.zname(ctx.tag) for s in local.snapshots(fs) if s.short == short), None)
    if zname is None:
        raise StateError(
            f"{snapshot} is not zrep snapshot (or does not exist). Cannot roll with it.", dataset=fs
        )
    dest_host, dest_fs = pair_dest(info.dest_host, info.dest_fs, fs)
    dst = ctx.zfs(dest_host)
    with steps.lock(ctx, [(ctx.host, fs)], "sync", local_info=info):
        ctx.say("Validating remote snap", fs)
        ssnaps = local.snapshots(fs)
        dinfo, dsnaps = dst.state(dest_fs)
        target = next((s for s in dsnaps if s.short == short), None)
        if target is None:
            raise StateError(
                f"{dest_fs}@{short} does not exist. Cannot roll to snap", dataset=fs, host=dest_host
            )
        if dinfo.resume_token:
            # A partial receive on top of a history we are about to cut is never resumed.
            ctx.say(f"aborting the partial receive on {dest_host}:{dest_fs}", fs, warning=True)
            dst.abort_resume(dest_fs)
        made = local.creation(snapshot)
        for line in (  # zrep's warning, word for word (double spaces included)
            f"WARNING: We will be rolling back  {dest_fs}, on {dest_host}",
            f"   to  {short}, made at: {made}",
            "",
            "All newer snapshots on remote side will be destroyed",
            f"You should have paused ongoing sync jobs for {dest_fs} before continuing",
        ):
            ctx.say(line, fs)
        if before_rollback is not None:
            before_rollback()
        newer_dst = [s for s in dsnaps if s.createtxg > target.createtxg]
        steps.release_stale(ctx, dst, newer_dst)  # held snapshots would stop the rollback
        dst.rollback(f"{dest_fs}@{short}", flags="-Rr")
        ctx.say(f"{dest_host}:{dest_fs} rolled back successfully to {short}", fs)
        ctx.say("Now cleaning up local snapshots", fs)
        local_target = next(s for s in ssnaps if s.short == short)
        for s in ssnaps:
            if s.createtxg > local_target.createtxg and s.sent is not None:
                local.inherit(s.name, f"{ctx.tag}:sent")
        link = Link(local, fs, dst, dest_fs)
        if local_target.sent is None:
            steps.mark_sent(ctx, link, [local_target])
        older_dst = [s for s in dsnaps if s.createtxg <= target.createtxg]
        steps.move_holds(ctx, link, short, src_snaps=ssnaps, dst_snaps=older_dst)
        record_rollback(local, fs, snapshot)
    return SyncResult(
        fs,
        ctx.host,
        dest_host,
        dest_fs,
        "rolled-back",
        snapshot=snapshot,
        message=f"{dest_host}:{dest_fs} rolled back to {short}",
    )
