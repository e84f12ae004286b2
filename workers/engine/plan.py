"""Pure planning: snapshot lists and properties in, a plan or a typed conflict out.

No I/O here, so every rule is tested with snapshot lists written as short strings.

What "complete" means for a sync (zrep issue 203): a snapshot is replicated when the
destination has a snapshot with the same *guid*. A stream that landed but whose completion was
never recorded (connection dropped after the data arrived, worker killed before `zfs set
zrep:sent`) is recognised here and merely marked sent, never renamed `_unsent` or resent.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Conflict, NotConfigured
from .model import Snapshot, last_sent, zrep_snapshots


@dataclass(frozen=True)
class SyncPlan:
    base: Snapshot  # incremental source: last sent, or a newer one that already landed
    landed: tuple[Snapshot, ...] = ()  # newer than last sent, already on the destination
    resume_token: str | None = None  # finish this partial receive first (`send -t`)
    abort_token: bool = False  # discard the destination's partial receive (`recv -A`)
    force: bool = False  # receive with -F (destination rolled back to base)


def plan_sync(
    src: list[Snapshot],
    dst: list[Snapshot],
    tag: str,
    *,
    src_fs: str,
    dst_fs: str,
    force: bool = False,
    resume: bool = False,
    dest_token: str | None = None,
    dest_written: int | None = None,
) -> SyncPlan:
    sent = last_sent(src, tag)
    if sent is None:
        raise NotConfigured(
            f"could not find a sent snapshot for {src_fs}: you must initialize it for zrep",
            dataset=src_fs,
        )
    if not dst:
        raise Conflict(
            f"destination {dst_fs} has no snapshots: it cannot receive an incremental; "
            "re-initialize the pair",
            dataset=src_fs,
        )
    src_by_guid = {s.guid: s for s in src}
    dst_guids = {s.guid for s in dst}
    newest = dst[-1]
    match = src_by_guid.get(newest.guid)
    ordered = zrep_snapshots(src, tag)
    base = sent
    landed: tuple[Snapshot, ...] = ()
    need_force = False

    if match is None:
        # The destination's newest snapshot was made there: the standby was written to and
        # snapshotted, or another source fed it. Only -F (roll it back to base) gets past.
        if not (force and sent.guid in dst_guids):
            raise Conflict(
                f"destination {dst_fs} has snapshot {newest.short!r} that {src_fs} does not have: "
                "the histories have diverged. Roll the destination back "
                f"(sync {sent.name}) or sync with -f to discard it",
                dataset=src_fs,
            )
        need_force = True
    elif match.createtxg > sent.createtxg:
        # Newer than last sent and already there: completion was never recorded.
        landed = tuple(
            s
            for s in ordered
            if sent.createtxg < s.createtxg <= match.createtxg and s.guid in dst_guids
        )
        base = match
    elif match.createtxg < sent.createtxg:
        # Destination is behind what we believe was sent (it was rolled back by hand).
        if not force:
            raise Conflict(
                f"destination {dst_fs} is at {match.short!r}, older than the last sent "
                f"{sent.short!r}. Mark the right snapshot with sentsync, or sync with -f",
                dataset=src_fs,
            )
        base = match
        need_force = True

    if dest_written and not force and not need_force:
        raise Conflict(
            f"destination {dst_fs} has been modified since its most recent snapshot; "
            "sync with -f to roll it back (the changes on the destination are lost)",
            dataset=src_fs,
        )
    if dest_written and force:
        need_force = True
    return SyncPlan(
        base=base,
        landed=landed,
        resume_token=dest_token if (dest_token and resume) else None,
        abort_token=bool(dest_token) and not resume,
        force=force or need_force,
    )


def is_unchanged(src: list[Snapshot], base: Snapshot, written: int | None) -> bool:
    """zrep's -c: nothing written since the last sent snapshot, and it is the newest one."""
    return bool(src) and src[-1].guid == base.guid and written == 0


def expire_candidates(
    snaps: list[Snapshot],
    tag: str,
    savecount: int,
    *,
    master: bool,
    protect_guids: frozenset[str] = frozenset(),
) -> list[Snapshot]:
    """Which of the tag's snapshots to destroy, oldest first.

    On the master: keep the last sent one and everything newer, plus `savecount - 1` older.
    On the standby: keep the newest `savecount`. On both, never the last sent snapshot, the
    newest snapshot of the dataset (the next incremental's base) or a protected guid (the
    other side's last sent). `_unsent` snapshots count like any other (they take space).
    """
    ordered = zrep_snapshots(snaps, tag)
    sent = last_sent(snaps, tag)
    if master:
        if sent is None:
            raise NotConfigured("no last sent snapshot found: refusing to expire")
        idx = next(i for i, s in enumerate(ordered) if s.guid == sent.guid)
        pool, keep = ordered[:idx], savecount - 1
    else:
        pool, keep = ordered, savecount
    doomed = pool[: max(0, len(pool) - keep)]
    never = set(protect_guids)
    if sent is not None:
        never.add(sent.guid)
    if snaps:
        never.add(snaps[-1].guid)
    return [s for s in doomed if s.guid not in never]
