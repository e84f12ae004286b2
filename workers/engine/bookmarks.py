"""The replication cursor: a bookmark of the last sent snapshot on the source.

A bookmark keeps a snapshot's guid and createtxg after the snapshot itself is gone, and
`zfs send -i fs#bookmark fs@new` sends from it. So when the source's last sent snapshot is
destroyed (its hold released by hand, another tool, a snapshot policy), the next sync still
sends an incremental from the cursor into the standby's snapshot with the same guid, instead
of failing and needing a full re-seed (zrepl's "replication cursor", for zrep's pairs).

Naming: `fs#zrepq_<snapshot>` (`pool/fs#zrepq_zrep_00002a`): the tag is in the snapshot's
name, so each tag (each standby) has its own cursor and one tag's never touches another's.

Cost, in zfs calls per sync: the source's snapshot read lists the bookmarks too (the same
`zfs get -d 1`, `-t snapshot,bookmark`: no extra call), each sync creates the new cursor (one
`zfs bookmark`) and destroys the previous one (one `zfs destroy fs#...`: OpenZFS destroys one
bookmark per call, `zfs destroy` takes no list of them), so two calls. Nothing is made for a
recursive pair (ZREP_R=-R): zfs refuses `send -R` from a bookmark.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import commands as cmd
from .context import Context
from .errors import BookmarkExists, Conflict, NoSuchDataset, ZrepqError
from .model import Snapshot
from .model import next_snapname as _next_of_snapshots
from .names import SnapName, parse_snapname
from .plan import SyncPlan
from .results import SyncResult
from .zfs import Link, ZfsHost, _int_or_none

PREFIX = "zrepq_"


@dataclass(frozen=True)
class Bookmark:
    name: str  # fs#name
    guid: str
    createtxg: int
    creation: int

    @property
    def short(self) -> str:
        return self.name.split("#", 1)[1]

    def snapshot_short(self, tag: str) -> str | None:
        """The snapshot this cursor marks (`zrep_00002a`), if it is one of `tag`'s cursors."""
        short = self.short
        if not short.startswith(PREFIX):
            return None
        snap = short[len(PREFIX) :]
        return snap if parse_snapname(snap, tag) is not None else None


def cursor_name(fs: str, snapshot_short: str) -> str:
    return f"{fs}#{PREFIX}{snapshot_short}"


def enabled(ctx: Context) -> bool:
    return ctx.config.bookmarks and not ctx.config.recursive


def read_source(ctx: Context, zh: ZfsHost, fs: str) -> tuple[list[Snapshot], list[Bookmark]]:
    """The source's snapshots (as `ZfsHost.snapshots`) and its bookmarks, in the one call."""
    if not enabled(ctx):
        return zh.snapshots(fs), []
    return zh.snapshots_and_bookmarks(fs)


def from_rows(rows: Sequence[list[str]]) -> list[Bookmark]:
    """Bookmarks from `zfs get -H -p -o name,property,value,source` rows (`fs#name` ones)."""
    acc: dict[str, dict[str, str]] = {}
    for row in rows:
        if len(row) >= 3 and "#" in row[0]:
            acc.setdefault(row[0], {})[row[1]] = row[2]
    out = [
        Bookmark(
            name,
            p.get("guid", ""),
            _int_or_none(p.get("createtxg", "0")) or 0,
            _int_or_none(p.get("creation", "0")) or 0,
        )
        for name, p in acc.items()
    ]
    out.sort(key=lambda b: b.createtxg)
    return out


def ours(books: Sequence[Bookmark], tag: str) -> list[Bookmark]:
    return [b for b in books if b.snapshot_short(tag) is not None]


def plan_from_cursor(
    ctx: Context,
    src_fs: str,
    dst_fs: str,
    ssnaps: Sequence[Snapshot],
    books: Sequence[Bookmark],
    dsnaps: Sequence[Snapshot],
    *,
    force: bool,
    resume: bool,
    dest_token: str | None,
    dest_written: int | None,
) -> SyncPlan | None:
    """A plan whose base is our cursor bookmark, when the source lost the snapshot the
    destination's newest one has (same guid) and only the cursor remembers it; else None
    (the ordinary plan applies). The destination's snapshot is the base: nothing there is
    rolled back or destroyed (a destination written since it needs -f, as always)."""
    if not dsnaps or not enabled(ctx):
        return None
    newest = dsnaps[-1]
    if any(s.guid == newest.guid for s in ssnaps):
        return None  # the snapshot is still there: the ordinary plan
    cursor = next((b for b in ours(books, ctx.tag) if b.guid == newest.guid), None)
    if cursor is None:
        return None
    if dest_written and not force:
        raise Conflict(
            f"destination {dst_fs} has been modified since its most recent snapshot; "
            "sync with -f to roll it back (the changes on the destination are lost)",
            dataset=src_fs,
        )
    base = Snapshot(cursor.name, cursor.guid, cursor.createtxg, cursor.creation)
    return SyncPlan(
        base=base,
        resume_token=dest_token if (dest_token and resume) else None,
        abort_token=bool(dest_token) and not resume,
        force=bool(force and dest_written),
    )


def advance(ctx: Context, link: Link, new_short: str, books: Sequence[Bookmark]) -> None:
    """Move the cursor to `new_short` (just sent): create its bookmark, then destroy our
    older ones (read with the snapshots). A failure here fails nothing: the snapshot is sent
    and held; the cursor is a second line of defence, logged and retried next sync."""
    if not enabled(ctx):
        return
    src, fs = link.src, link.src_fs
    new = cursor_name(fs, new_short)
    try:
        # BookmarkExists: made by an earlier, interrupted run (the same snapshot, the name).
        with contextlib.suppress(BookmarkExists):
            src.run(cmd.bookmark(f"{fs}@{new_short}", new))
        for b in ours(books, ctx.tag):
            if b.name != new:
                with contextlib.suppress(NoSuchDataset):
                    src.run(cmd.destroy(b.name))
    except ZrepqError as e:
        ctx.say(f"could not move the replication cursor to {new}: {e}", fs, warning=True)


def drop_cursors(ctx: Context, zh: ZfsHost, fs: str) -> list[str]:
    """Destroy the tag's cursors on `fs` (`handback`, `clear`): one read, one destroy each;
    other tags' cursors and bookmarks not named by zrepq stay. Read even with cursors off
    (ZREPQ_BOOKMARKS=off now, on when they were made). The names destroyed, as `fs#...`."""
    dropped = []
    for b in ours(zh.bookmarks(fs), ctx.tag):
        with contextlib.suppress(NoSuchDataset):  # gone meanwhile: as good
            zh.run(cmd.destroy(b.name))
        dropped.append(b.name)
    return dropped


def ensure(ctx: Context, link: Link, base: Snapshot, books: Sequence[Bookmark]) -> None:
    """The cursor on `base` if it has none (a pair from before cursors): no call otherwise."""
    if enabled(ctx) and not any(b.guid == base.guid for b in ours(books, ctx.tag)):
        advance(ctx, link, base.short, books)


def is_cursor(base: Snapshot) -> bool:
    return "#" in base.name


def announce(ctx: Context, link: Link, base: Snapshot, result: SyncResult) -> None:
    """Say (and record on the master fs, for `status -v`) that this sync sends from the
    cursor: one `zfs set`, on this path only."""
    result.from_bookmark = base.name
    ctx.say(
        f"the last sent snapshot of {link.src_fs} is gone; sending from its bookmark "
        f"{base.name} (the same guid as {link.dst.host}:{link.dst_fs}'s newest snapshot)",
        link.src_fs,
        level="notice",
    )
    link.src.set_q(
        link.src_fs, {"bookmark-base": base.name, "bookmark-base-time": str(int(time.time()))}
    )


def next_snapname(snaps: list[Snapshot], books: Sequence[Bookmark], tag: str) -> SnapName:
    """The next snapshot's name, past our cursors too: when every snapshot of the tag is gone
    from the source, the sequence goes on from the cursor's (the standby has those names)."""
    name = _next_of_snapshots(snaps, tag)
    seqs = [
        z.seq for b in ours(books, tag) if (z := parse_snapname(b.snapshot_short(tag) or "", tag))
    ]
    return SnapName(max([name.seq, *(s + 1 for s in seqs)]), tag)
