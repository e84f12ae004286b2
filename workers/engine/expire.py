"""expire: prune old zrep snapshots on both sides, each with its own savecount.

The rule itself is pure (`plan.expire_candidates`); this module reads both sides, applies it
and destroys. The last sent snapshot is never destroyed, on either side, and it also carries
a `zfs hold`, so even a mistake here would be refused by ZFS ("dataset is busy").

An expire run on its own first settles our holds on each side it expires: the hold goes on
that side's current last sent snapshot, and every other hold of ours is released before
anything is destroyed. Such a hold is stale by definition (zrep synced since zrepq last did,
and moves no hold), and left in place it would make this expire, and zrep's, fail on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from . import steps
from .context import Context
from .errors import CommandError, SplitBrain, StateError
from .events import SnapshotsExpired
from .model import DatasetInfo, Snapshot, last_sent
from .names import validate_dataset, validate_host
from .pause import check_not_paused
from .plan import expire_candidates
from .requests import ExpireRequest
from .results import ExpireResult
from .zfs import Link, ZfsHost

log = logging.getLogger(__name__)


def expire(ctx: Context, req: ExpireRequest) -> ExpireResult:
    if ctx.config.skip_expire:
        raise StateError("You explicitly called expire and also have ZREP_SKIP_EXPIRE set")
    fs = req.fs
    local = ctx.local
    info = local.require(fs)
    check_not_paused(info, ctx.host, for_expire=True)
    with steps.lock(ctx, [(ctx.host, fs)], "expire", local_info=info):
        ctx.say(f"Expiring zrep snaps on {fs}", fs)
        if not info.is_master or req.local_only:
            destroyed = expire_side(ctx, local, fs, info, settle_holds=True)
            return ExpireResult(fs, ctx.host, destroyed)
        host, dest_fs = info.dest_host, info.dest_fs
        if not host or not dest_fs:
            raise StateError(f"Problem getting zrep properties for fs {fs}", dataset=fs)
        link = Link(local, fs, ctx.zfs(validate_host(host)), validate_dataset(dest_fs))
        return expire_pair(ctx, link, info=info, settle_holds=True)


@dataclass(frozen=True)
class JustSent:
    """What a sync knows at its end, under the lease it still holds: both sides as read at
    its start, and `name`, just sent (a plain receive, no `-F`) and marked sent at `when` on
    both sides.

    `before`: the source's snapshots; `dst_info`/`dst_before`: the standby's properties and
    snapshots, read in one call at the start, under the same lease. Nothing but this sync
    changed either side since: the lease excludes every other zrepq operation on the pair,
    the standby is readonly, and a receive without `-F` only adds the new snapshot (as the
    standby's newest, since it must start from the standby's newest). So the expire reads
    neither side again (issue 17: one `zfs get` less on the standby, an SSH session less).
    """

    before: list[Snapshot]
    name: str
    when: int
    dst_fs: str
    dst_info: DatasetInfo
    dst_before: list[Snapshot]

    def both_sides(self) -> tuple[list[Snapshot], list[Snapshot]] | None:
        """(source, standby) snapshots now, without reading them: each start list with `name`
        marked sent, appended as the newest where this sync made or received it.

        The new snapshot's guid is not read: a sync that made it knows only its name. It is
        identified on both sides by one token that no real guid (a decimal number) can equal,
        so the rules that go by guid (never the last sent one, the newest, the other side's
        last sent) keep it on both sides; a snapshot that already existed (synconly) keeps its
        real guid. None, and the caller reads both sides, when the standby had a snapshot of
        that name before the receive, or the source's has no guid: not what a plain receive
        leaves, so not something to assume."""
        short = self.name.split("@", 1)[1]
        if any(s.short == short for s in self.dst_before):
            return None
        mine = next((s for s in self.before if s.name == self.name), None)
        if mine is not None:
            if not mine.guid:
                return None
            guid = mine.guid
            src = [replace(s, sent=self.when) if s is mine else s for s in self.before]
        else:
            guid = f"just-sent:{self.name}"
            txg = max((s.createtxg for s in self.before), default=0) + 1
            src = [*self.before, Snapshot(self.name, guid, txg, self.when, self.when)]
        dtxg = max((s.createtxg for s in self.dst_before), default=0) + 1
        got = Snapshot(f"{self.dst_fs}@{short}", guid, dtxg, self.when, self.when)
        return src, [*self.dst_before, got]


def expire_pair(
    ctx: Context,
    link: Link,
    *,
    info: DatasetInfo | None = None,
    just_sent: JustSent | None = None,
    announce: bool = True,
    settle_holds: bool = False,
) -> ExpireResult:
    """Expire the master side, then the standby side with the standby's own savecount.

    The standby's properties and snapshots are read in one call and the master's snapshots
    in another, unless the sync that just ran hands both over (`just_sent`, read at its start
    under the lease it still holds). The split-brain check (the standby must not be master)
    is made on whichever state is used: for a handed-over one, the sync made it already on
    that same read, under the lease, and refused; a read made here instead would not close
    the window either (zrep on the standby could set master right after it), and no zrepq
    takeover can run while the sync holds the pair's lease. With `announce`,
    zrep's lines for the remote part: "Also running expire on HOST:FS now..." and the far
    side's "Expiring zrep snaps on FS" (zrep runs `zrep expire FS` there, which prints it).
    `settle_holds`: first move our holds to each side's last sent snapshot (a sync has just
    done that).
    """
    src, src_fs, dst, dst_fs = link.src, link.src_fs, link.dst, link.dst_fs
    info = info or src.info(src_fs)
    known = just_sent.both_sides() if just_sent is not None else None
    if known is not None and just_sent is not None:
        (ssnaps, dsnaps), dinfo = known, just_sent.dst_info
    else:
        dinfo, dsnaps = dst.state(dst_fs)
        ssnaps = src.snapshots(src_fs)
    sent = last_sent(ssnaps, ctx.tag)
    protect = frozenset({sent.guid}) if sent else frozenset()
    destroyed = expire_side(
        ctx, src, src_fs, info, master=True, snaps=ssnaps, settle_holds=settle_holds
    )
    if announce:
        ctx.say(f"Also running expire on {dst.host}:{dst_fs} now...", src_fs)
    if dinfo.is_master:
        raise SplitBrain(
            f"Remote side {dst.host}:{dst_fs} also marked as master. Split brain detected",
            dataset=src_fs,
            host=dst.host,
        )
    if announce:
        ctx.say(f"Expiring zrep snaps on {dst_fs}", src_fs)
    remote = expire_side(
        ctx,
        dst,
        dst_fs,
        dinfo,
        master=False,
        snaps=dsnaps,
        protect=protect,
        settle_holds=settle_holds,
    )
    return ExpireResult(src_fs, src.host, destroyed, dst.host, remote, remote_fs=dst_fs)


def expire_side(
    ctx: Context,
    zh: ZfsHost,
    fs: str,
    info: DatasetInfo,
    *,
    master: bool | None = None,
    snaps: list[Snapshot] | None = None,
    protect: frozenset[str] = frozenset(),
    settle_holds: bool = False,
) -> list[str]:
    savecount = info.savecount
    if savecount is None or savecount < 1:
        raise StateError(
            f"{ctx.tag}:savecount on {zh.host}:{fs} set to improper value "
            f"{info.get('savecount')!r}",
            dataset=fs,
            host=zh.host,
        )
    is_master = info.is_master if master is None else master
    snaps = zh.snapshots(fs) if snaps is None else snaps
    if settle_holds:
        _settle_holds(ctx, zh, snaps, protect)
    doomed = expire_candidates(snaps, ctx.tag, savecount, master=is_master, protect_guids=protect)
    destroyed = []
    for s in doomed:
        try:
            zh.destroy(s.name, recursive=True)
            destroyed.append(s.name)
        except CommandError as e:
            # A held snapshot (someone's `zfs hold`) stays: report it and go on, in zfs's own
            # words as zrep shows them ("cannot destroy snapshot ...: dataset is busy").
            ctx.say(
                e.stderr.strip() or f"could not expire {zh.host}:{s.name}: {e}", fs, warning=True
            )
    if destroyed:
        ctx.emit(SnapshotsExpired(zh.host, fs, tuple(destroyed)))
    return destroyed


def _settle_holds(
    ctx: Context, zh: ZfsHost, snaps: list[Snapshot], protect: frozenset[str]
) -> None:
    """Our hold on this side's last sent snapshot only (the master's last sent one, by guid,
    on the standby), placed first, then every other one of ours released: one `zfs release`
    when any other snapshot has a hold, one `zfs hold` when the last sent one has none (a
    last sent snapshot that carries someone else's hold is protected by it already)."""
    keep = next((s for s in snaps if s.guid in protect), None) or last_sent(snaps, ctx.tag)
    if keep is not None and keep.userrefs == 0:
        zh.hold(ctx.config.hold_tag, keep.name)
    released = steps.release_stale(ctx, zh, snaps, keep=keep.short if keep else None)
    if released:
        # The log only: zrep's expire prints nothing of the kind, and scripts compare output.
        log.info("%s: released %s where held: %s", zh.host, ctx.config.hold_tag, released)
