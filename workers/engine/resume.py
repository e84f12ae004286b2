"""Resumable receives: `zfs recv -s` by default, and the pools that cannot do it.

A receive with `-s` keeps what arrived when the stream is cut, and the next sync sends only
the rest (`zfs send -t TOKEN`). It needs the receiving pool's `feature@extensible_dataset`,
enabled on every pool created by OpenZFS 0.6.4 (2015) or later unless it was created with
`zpool create -d` or a restrictive `compatibility`. On a pool without it, OpenZFS refuses the
receive at its start, before any data is written: `cannot receive ...: pool must be upgraded
to receive this stream.`

zrepq does not ask each pool first (`zpool get feature@extensible_dataset` would be one more
command, one more SSH round trip, for every direct run and every new worker process, to guard
against a pool that is almost never met). It tries `-s`, and when the receive fails with that
message it sends the same stream again without `-s` and remembers the pool for the life of
the process, so later receives there go without `-s` from the start. If the plain receive
fails the same way, `-s` was not the reason (the stream needs another feature the pool lacks,
e.g. a `-c`/`-L` stream): that error is reported. `ZREP_RESUME=no` switches resume off for a
host outright.

`finish_partial` is the other half: a sync that finds a partial receive on the destination
finishes it with `zfs send -t TOKEN` before anything else, or, when the sending side refuses
the token (its snapshot is gone), aborts it and goes on with a plain incremental.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from . import commands as cmd
from . import steps
from .context import Context
from .errors import Conflict, PartialReceiveInWay, PoolNeedsUpgrade, StaleResumeToken
from .model import Snapshot
from .plan import SyncPlan, plan_sync
from .ports import LockHandle
from .results import SyncResult
from .zfs import Link

_unsupported: set[tuple[str, str]] = set()  # (host, pool) where `recv -s` was refused
_mutex = threading.Lock()


def pool_of(fs: str) -> str:
    return fs.split("/", 1)[0]


def supported(host: str, fs: str) -> bool:
    """False once `recv -s` into `fs`'s pool on `host` was refused in this process."""
    with _mutex:
        return (host, pool_of(fs)) not in _unsupported


def forget() -> None:
    """Clear what was learnt (tests; a pool may have been upgraded)."""
    with _mutex:
        _unsupported.clear()


def stream_into(
    ctx: Context,
    link: Link,
    send_args: Sequence[str],
    recv_flags: Sequence[str],
    *,
    resume: bool,
    snapshot: str,
    base: str | None,
    handle: LockHandle,
) -> tuple[int, float]:
    """`steps.stream` into `zfs recv [-s] RECV_FLAGS DST_FS`: with `-s` when `resume` and the
    pool is not known to refuse it; once more without `-s` when the pool turns out to."""
    dst, dst_fs = link.dst, link.dst_fs
    with_s = resume and supported(dst.host, dst_fs)

    def attempt(recv: list[str]) -> tuple[int, float]:
        return steps.stream(ctx, link, send_args, recv, snapshot=snapshot, base=base, handle=handle)

    try:
        return attempt([*(["-s"] if with_s else []), *recv_flags, dst_fs])
    except PoolNeedsUpgrade:
        if not with_s:
            raise
    pool = pool_of(dst_fs)
    ctx.say(
        f"{dst.host}:{pool} refused a resumable receive (no feature@extensible_dataset); "
        f"receiving without -s, so a cut stream there starts over (ZREP_RESUME=no skips "
        "this first attempt)",
        link.src_fs,
        warning=True,
    )
    try:
        res = attempt([*recv_flags, dst_fs])
    except PoolNeedsUpgrade as err:
        err.message += f" (also without -s: the stream needs a feature {pool} lacks)"
        raise
    with _mutex:
        _unsupported.add((dst.host, pool))
    return res


# How long to wait, between tries, for another receive into the destination to end: a killed
# worker's, whose task Celery runs again at once. Its stream is cut when the worker dies
# (PR_SET_PDEATHSIG), so the far `zfs recv` saves its state within a second or two.
RECEIVE_ENDING_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0)


def _resume(
    ctx: Context, link: Link, handle: LockHandle, token: str | None, result: SyncResult
) -> None:
    """`send -t TOKEN | recv -s`. While another receive still writes into the destination
    (OpenZFS refuses ours, and shows that one's token already), wait for it to end and resume
    from the token it leaves; nothing to resume if it landed whole."""
    dst, dst_fs = link.dst, link.dst_fs
    waits = iter(RECEIVE_ENDING_WAITS)
    while token is not None:
        try:
            nbytes, _ = steps.stream(
                ctx,
                link,
                cmd.resumed(token),
                ["-s", dst_fs],
                snapshot="(resumed)",
                base=None,
                handle=handle,
                resumed=True,
            )
        except PartialReceiveInWay as err:
            pause = next(waits, None)
            if pause is None:
                err.message += (
                    f"; another receive into {dst.host}:{dst_fs} was still running after "
                    f"{sum(RECEIVE_ENDING_WAITS):g} s"
                )
                raise
            ctx.say(
                f"another receive is still writing into {dst.host}:{dst_fs}; waiting "
                f"{pause:g} s for it to end",
                link.src_fs,
                level="notice",
            )
            time.sleep(pause)
            steps.check(handle)
            token = dst.info(dst_fs).resume_token
            continue
        result.bytes_sent += nbytes
        result.resumed = True
        return


def finish_partial(
    ctx: Context, link: Link, handle: LockHandle, plan: SyncPlan, *, force: bool, result: SyncResult
) -> tuple[SyncPlan, list[Snapshot], list[Snapshot]]:
    """Finish a partial receive with `send -t`; if the token is stale, abort it instead.
    Then plan again from both sides as they are now."""
    src, src_fs, dst, dst_fs = link.src, link.src_fs, link.dst, link.dst_fs
    token = plan.resume_token
    assert token is not None
    ctx.say(f"resuming the partial receive on {dst.host}:{dst_fs}", src_fs, level="notice")
    try:
        _resume(ctx, link, handle, token, result)
    except StaleResumeToken as err:
        ctx.say(
            f"resume token on {dst.host}:{dst_fs} is stale ({err.message}); aborting "
            "it and sending a plain incremental",
            src_fs,
            warning=True,
        )
        dst.abort_resume(dst_fs)
    ssnaps = src.snapshots(src_fs)
    dsnaps = dst.snapshots(dst_fs)
    dinfo = dst.info(dst_fs)
    new_plan = plan_sync(
        ssnaps, dsnaps, ctx.tag, src_fs=src_fs, dst_fs=dst_fs, force=force, resume=False,
        dest_token=None, dest_written=dinfo.written,
    )  # fmt: skip
    if dinfo.resume_token:
        raise Conflict(
            f"{dst.host}:{dst_fs} still holds a partial receive after resuming", dataset=src_fs
        )
    return new_plan, ssnaps, dsnaps
