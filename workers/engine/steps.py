"""The steps several zrep commands share, as functions over a `Context`.

- `lock`: zrepq's lock on this host's datasets the command touches, checking the partner's
  (read-only: another host's worker holds that one), then zrep's own `lock-pid` on this
  host's dataset; `check` stops work once the lease is lost;
- `stream`: `zfs send | [filters] | zfs recv` through the transport, with progress events;
- `mark_sent` and `move_holds`: how a snapshot becomes the pair's last sent one.

The verbs call these; these call `ZfsHost`, the transport and the locks, never a verb.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import commands as cmd
from . import zfs_errors, zreplock
from .context import Context
from .errors import Cancelled, LockHeld, LockLost, PipelineError
from .events import StreamFinished, StreamProgress, StreamStarted
from .locks import blocks, describe_holder, lock_name
from .model import DatasetInfo, Snapshot, may_hold
from .ports import LockHandle, StreamSpec
from .zfs import Link, ZfsHost

if TYPE_CHECKING:
    from .bookmarks import Bookmark


@contextmanager
def lock(
    ctx: Context,
    targets: Sequence[tuple[str, str]],
    operation: str,
    *,
    local_info: DatasetInfo | None = None,
    pair: DatasetInfo | None = None,
) -> Iterator[LockHandle]:
    """Lock the (host, fs) in `targets`, released on every path.

    First zrepq's own lock (`ctx.locks`: the Redis lease, or `zrepq-local`'s lock files):
    the leases of this host's datasets are taken; those of another host's datasets in
    `targets`, and that of the partner of this host's dataset (the pair of `local_info`, or
    of `pair` for a command that takes no zrep lock-pid), are
    only checked to be free, in the same atomic step (each host's worker writes its own
    datasets' leases only: `_locked`). Then, for the dataset of this host (`local_info`),
    zrep's own `TAG:lock-pid` and `TAG:lock-time`, checked (a zrep or a zrepq process of this
    host that holds them makes this one refuse) and, when an upstream zrep is installed here
    (`zreplock.marks_wanted`), set under zrep's global lock, so that a zrep run from cron
    here sees the dataset locked while this one works. Refusals say `Cannot lock FS. Cannot
    continue` (zrep's words) and then who holds it.
    """
    claim = None
    if local_info is not None:
        name = local_info.name

        def claim(zlocal: ZfsHost, glock: zreplock.GlobalLock, marks: bool) -> zreplock.Mark | None:
            return zreplock.claim(zlocal, name, glock, marks=marks)

    with _locked(ctx, targets, operation, claim, local_info, pair=pair) as (handle, _):
        yield handle


@contextmanager
def lock_reading(
    ctx: Context,
    fs: str,
    operation: str,
    check: Callable[[DatasetInfo], None],
    *,
    bookmarks: bool = False,
) -> Iterator[tuple[LockHandle, DatasetInfo, SourceRead]]:
    """`lock` on this host's `fs`, reading its state under zrep's global lock instead of
    before: the lease first, then in one `zfs get -d 1` the properties (`check` refuses on
    them before any mark is set: not master, paused), zrep's marks, the snapshots and, with
    `bookmarks`, the bookmarks, which are then as fresh as the lock
    (`zreplock.claim_reading`). Yields the lease, the properties and the snapshots and
    bookmarks: a sync reads its source nowhere else."""
    read: list[tuple[DatasetInfo, SourceRead]] = []

    def checked(info: DatasetInfo) -> None:
        check(info)
        # The partner is known only now: its lease is checked after ours was taken, which
        # excludes the partner's worker as well (it checks ours, then takes its own, in one
        # step: whichever comes second sees the other). No wait here, under zrep's lock.
        _check_partner(ctx, info, _operation(ctx, operation))

    def claim(zlocal: ZfsHost, glock: zreplock.GlobalLock, marks: bool) -> zreplock.Mark | None:
        mark, info, snaps, books = zreplock.claim_reading(
            zlocal, fs, glock, checked, bookmarks=bookmarks, marks=marks
        )
        read.append((info, SourceRead(snaps, books)))
        return mark

    with _locked(ctx, [(ctx.host, fs)], operation, claim, None, subject=fs) as (handle, _):
        info, source = read[0]
        yield handle, info, source


@dataclass(frozen=True)
class SourceRead:
    """A sync's source as read under its lock: snapshots, and bookmarks when asked for."""

    snapshots: list[Snapshot]
    bookmarks: list[Bookmark]


@contextmanager
def _locked(
    ctx: Context,
    targets: Sequence[tuple[str, str]],
    operation: str,
    claim: Callable[[ZfsHost, zreplock.GlobalLock, bool], zreplock.Mark | None] | None,
    local_info: DatasetInfo | None,
    *,
    subject: str | None = None,
    pair: DatasetInfo | None = None,
) -> Iterator[tuple[LockHandle, zreplock.Mark | None]]:
    keys = sorted({lock_name(ctx.tag, h, fs) for h, fs in targets if h == ctx.host})
    others = {lock_name(ctx.tag, h, fs) for h, fs in targets if h != ctx.host}
    partner = _partner(ctx, local_info or pair)
    if partner is not None:
        others.add(lock_name(ctx.tag, *partner))
    operation = _operation(ctx, operation)
    with ExitStack() as stack:
        mark = None
        try:
            handle = stack.enter_context(
                ctx.locks.hold(
                    keys,
                    operation=operation,
                    wait=ctx.lock_wait,
                    check=sorted(others - set(keys)),
                )
            )
            if claim is not None:
                zlocal, glock = ctx.local, zreplock.global_lock(ctx.config.rundir)
                mark = claim(zlocal, glock, _marks(ctx, handle))
                if mark is not None:
                    stack.callback(zreplock.release, zlocal, mark, glock)
        except LockHeld as e:
            fs = subject or (
                local_info.name if local_info is not None else _lock_subject(ctx, targets)
            )
            raise LockHeld(
                f"Cannot lock {fs}. Cannot continue\n{e.message}",
                holder=e.holder,
                dataset=fs,
                host=e.host or ctx.host,
            ) from None
        yield handle, mark


def _marks(ctx: Context, handle: LockHandle) -> bool:
    """Set zrep's marks? When zrep is installed here (the `lock_marks` setting), and when
    zrepq's lock is one that other zrepq processes of this host cannot see: a handle with
    `host_excluded` False (a worker whose lease came without zrepq-local's lock file,
    `workers.filelock.LeaseAndFile`) makes the marks exclude them instead."""
    return zreplock.marks_wanted(ctx.config.lock_marks) or not handle.host_excluded


def _operation(ctx: Context, operation: str) -> str:
    """The operation as lock tokens name it: with the task id (`sync/ID`) when there is one."""
    return f"{operation}/{ctx.operation_id}" if ctx.operation_id else operation


def _partner(ctx: Context, info: DatasetInfo | None) -> tuple[str, str] | None:
    """The other side of the pair this host's dataset belongs to (from zrep's src/dest
    properties, the same on both sides), or None when it is not part of one."""
    if info is None or not info.configured:
        return None
    src = (info.src_host, info.src_fs)
    dest = (info.dest_host, info.dest_fs)
    here = (ctx.host, info.name)
    other = dest if src == here else src if dest == here else None
    if other is None or not other[0] or not other[1]:
        return None
    return other[0], other[1]


def _check_partner(ctx: Context, info: DatasetInfo, operation: str) -> None:
    """Refuse when the lease of `info`'s partner is held by another operation."""
    partner = _partner(ctx, info)
    if partner is None:
        return
    name = lock_name(ctx.tag, *partner)
    holder = ctx.locks.holder(name)
    if blocks(holder, operation):
        raise LockHeld(f"lease {name} is held by {describe_holder(holder)}", holder=holder)


def _lock_subject(ctx: Context, targets: Sequence[tuple[str, str]]) -> str:
    """The dataset zrep would name in `Cannot lock ...`: this host's, else the first."""
    here = [fs for h, fs in targets if h == ctx.host]
    return (here or [fs for _, fs in targets] or ["?"])[0]


def check(handle: LockHandle) -> None:
    """Stop before the next change once the lease is lost (someone else may hold it now)."""
    if handle.lost.is_set():
        raise LockLost("lost the lease while working; stopped before the next change")


def stream(
    ctx: Context,
    link: Link,
    send_args: Sequence[str],
    recv_args: Sequence[str],
    *,
    snapshot: str,
    base: str | None,
    handle: LockHandle | None,
    resumed: bool = False,
) -> tuple[int, float]:
    """`zfs send -v -P ARGS | [filters] | ssh dst zfs recv ARGS`, with progress events
    (about `link.src_fs` and `snapshot`).

    No separate `zfs send -nvP` for the size: the send itself prints that estimate before
    the first byte (`size` line, parsed by the pipeline), so progress events carry the
    total from the first one on; `StreamStarted.total` is None. A failure is typed by what
    zfs said (`StaleResumeToken` for a refused `send -t`, `PoolNeedsUpgrade`).
    """
    dataset = link.src_fs
    ctx.emit(StreamStarted(dataset, snapshot, base, link.dst.host, link.dst_fs, None, resumed))
    spec = StreamSpec(
        send_host=link.src.host,
        send_argv=cmd.send(send_args),
        recv_host=link.dst.host,
        recv_argv=cmd.recv(recv_args),
        outfilter=ctx.config.outfilter,
        infilter=ctx.config.infilter,
    )

    def progress(p: StreamProgress) -> None:
        ctx.emit(replace(p, dataset=dataset, snapshot=snapshot))

    cancel = handle.lost if handle is not None else threading.Event()
    try:
        res = ctx.transport.stream(spec, on_progress=progress, cancel=cancel)
    except Cancelled:
        if cancel.is_set():
            raise LockLost(
                f"lost the lease on {dataset} during the send of {snapshot}; stream stopped",
                dataset=dataset,
                host=ctx.host,
            ) from None
        raise
    except PipelineError as e:
        raise zfs_errors.typed_stream(e, resuming=resumed) from None
    refused = zfs_errors.refused_send(res.stderr.get("send", ""))
    if refused is not None:
        # Both ends exited 0, yet a snapshot was not sent (OpenZFS 2.1's -I without `send`):
        # the stream's failure all the same, before anything is recorded as sent.
        err = PipelineError(
            f"zfs send on {link.src.host} failed (exit 0): {refused}",
            argv=spec.send_argv,
            returncode=0,
            stderr=res.stderr.get("send", ""),
            host=link.src.host,
        )
        raise zfs_errors.typed_stream(err, resuming=resumed)
    ctx.emit(StreamFinished(dataset, snapshot, res.bytes_sent, res.elapsed))
    return res.bytes_sent, res.elapsed


def mark_sent(ctx: Context, link: Link, snaps: Sequence[Snapshot]) -> None:
    """Record completion the way zrep does: `TAG:sent=<epoch>` on both sides."""
    now = str(int(time.time()))
    for s in snaps:
        link.dst.set(f"{link.dst_fs}@{s.short}", {f"{ctx.tag}:sent": now})
        link.src.set(s.name, {f"{ctx.tag}:sent": now})


def move_holds(
    ctx: Context,
    link: Link,
    new: str,
    *,
    src_snaps: Sequence[Snapshot] = (),
    dst_snaps: Sequence[Snapshot] = (),
    sent: bool = False,
) -> None:
    """Hold the new last-sent snapshot on both sides, and release our hold from every other
    snapshot of either side that may carry one. With `sent`, first mark `new` sent on each
    side (`mark_sent`'s `TAG:sent`), the standby first.

    The hold stops a manual `zfs destroy` (or an upstream zrep expire) from removing the
    incremental base, which would force a full re-seed. Any other hold of ours is stale by
    definition: the previous base, and also one left behind when zrep synced in between
    (zrep moves no hold), which would keep zrep's expire failing with "dataset is busy".
    `src_snaps`/`dst_snaps` are the sides' snapshots as read under the lease, with their
    `userrefs`: only those with a hold (or unknown) are named, in one `zfs release` per
    side, so the steady state costs what it always did (the previous base, once).

    Each side's writes (mark, hold, release) go in one `ZfsHost.batch`: one round trip to
    the far side instead of three (issue 17). The order within a side is the one that
    matters: a failed mark or hold raises before the old hold is released; a side whose
    writes failed stops the other side's too (the next sync finds the snapshot landed).
    """
    tag = ctx.config.hold_tag
    now = str(int(time.time()))
    for zh, fs, snaps in ((link.dst, link.dst_fs, dst_snaps), (link.src, link.src_fs, src_snaps)):
        batch = zh.batch()
        if sent:
            batch.set(f"{fs}@{new}", {f"{ctx.tag}:sent": now})
        # `sync -c` of an unchanged dataset keeps the same last sent snapshot: when it was read
        # with holds on it (ours, placed by the sync that sent it, or someone else's, which
        # protects it as well: `expire._settle_holds`' rule), holding it again is a zfs call
        # that changes nothing. A snapshot just sent is not in the lists: always held.
        if not any(s.short == new and (s.userrefs or 0) > 0 for s in snaps):
            batch.hold(tag, f"{fs}@{new}")
        batch.release(tag, *stale_holds(snaps, keep=new))
        batch.run()


def release_stale(
    ctx: Context, zh: ZfsHost, snaps: Sequence[Snapshot], *, keep: str | None = None
) -> list[str]:
    """Release our hold from every snapshot in `snaps` that may carry one, except `keep`
    (a short name); one call, none when no snapshot has a hold. Returns those released."""
    return zh.release(ctx.config.hold_tag, *stale_holds(snaps, keep=keep))


def stale_holds(snaps: Sequence[Snapshot], *, keep: str | None = None) -> list[str]:
    """The snapshots in `snaps` that may carry a hold of ours, but `keep` (a short name)."""
    return [s.name for s in snaps if s.short != keep and may_hold(s)]
