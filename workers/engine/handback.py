"""handback: give a pair back to upstream zrep, exactly as zrep keeps it.

It removes only what zrepq adds to a pair, on both sides: its `zfs hold`s
(`zrepq:TAG:lastsent`), its replication cursor bookmarks (`fs#zrepq_TAG_NNNNNN`: not other
tags', not anyone else's), its own properties (`zrepq:TAG:*`: pause, error flag, rollback
mark, cursor notes) and a partial receive (`zfs recv -A`: zrep without `-r` cannot receive
into one). Every `TAG:*` property, every snapshot and the pair's roles stay as they are, so
the next `zrep sync` and `zrep expire` run as if zrepq had never been there. The pair's lease
is taken for the duration (refused while another zrepq operation holds it) and given back at
the end, so no zrepq lease is left on it either.

Not zrep's `clear`, which destroys the tag's snapshots and properties on one side.
"""

from __future__ import annotations

from . import bookmarks, steps
from .context import Context
from .errors import StateError
from .model import DatasetInfo, Snapshot, zrepq_prop
from .names import validate_dataset, validate_host
from .requests import HandbackRequest
from .results import HandbackResult
from .zfs import ZfsHost


def handback(ctx: Context, req: HandbackRequest) -> HandbackResult:
    fs, local_only = req.fs, req.local_only
    local = ctx.local
    info = local.require(fs)
    # The other side of the pair, seen from here: run on the master or on the standby.
    host, other = (info.dest_host, info.dest_fs) if info.is_master else (info.src_host, info.src_fs)
    if not local_only and (not host or not other):
        raise StateError(f"Problem getting zrep properties for fs {fs}", dataset=fs)
    result = HandbackResult(fs, ctx.host, None if local_only else host, other)
    sides: list[tuple[ZfsHost, str]] = [(local, fs)]
    if not local_only and host and other:
        sides.append((ctx.zfs(validate_host(host)), validate_dataset(other)))
    with steps.lock(ctx, [(zh.host, name) for zh, name in sides], "handback", local_info=info):
        # Read both sides before changing either: an unreachable side stops it untouched.
        states = [(zh, name, *zh.state(name)) for zh, name in sides]
        for zh, name, dinfo, snaps in states:
            _hand_back_side(ctx, zh, name, dinfo, snaps, result)
    ctx.say(f"{fs}: handed back; zrep's own state is untouched", fs)
    return result


def _hand_back_side(
    ctx: Context,
    zh: ZfsHost,
    fs: str,
    info: DatasetInfo,
    snaps: list[Snapshot],
    result: HandbackResult,
) -> None:
    where = f"{zh.host}:{fs}"
    released = steps.release_stale(ctx, zh, snaps)  # every snapshot with a hold: one call
    if released:
        result.released += [f"{zh.host}:{n}" for n in released]
        ctx.say(f"{where}: released {ctx.config.hold_tag} where held", fs)
    cursors = bookmarks.drop_cursors(ctx, zh, fs)  # either side: a failover leaves them behind
    if cursors:
        result.bookmarks += [f"{zh.host}:{n}" for n in cursors]
        ctx.say(f"{where}: destroyed zrepq's replication cursor {', '.join(cursors)}", fs)
    for prop, _source in zh.own_props(fs, zrepq_prop(ctx.tag, "")):
        zh.inherit(fs, prop)
        result.properties.append(f"{where} {prop}")
    if any(p.startswith(where) for p in result.properties):
        ctx.say(f"{where}: removed zrepq's properties", fs)
    if info.resume_token:
        zh.abort_resume(fs)
        result.aborted.append(where)
        ctx.say(f"{where}: aborted the partial receive (zfs recv -A)", fs)
