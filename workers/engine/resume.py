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
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import PipelineError

if TYPE_CHECKING:
    from .engine import Engine
    from .zfs import ZfsHost

NO_FEATURE = "pool must be upgraded to receive this stream"

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


def refused_for_feature(err: PipelineError) -> bool:
    return NO_FEATURE in (err.stderr or "")


def stream_into(
    eng: Engine,
    src: ZfsHost,
    send_args: Sequence[str],
    dst: ZfsHost,
    recv_flags: Sequence[str],
    dst_fs: str,
    *,
    resume: bool,
    **kw: Any,
) -> tuple[int, float]:
    """`eng.stream` into `zfs recv [-s] RECV_FLAGS DST_FS`: with `-s` when `resume` and the
    pool is not known to refuse it; once more without `-s` when the pool turns out to."""
    with_s = resume and supported(dst.host, dst_fs)
    argv = [*(["-s"] if with_s else []), *recv_flags, dst_fs]
    try:
        return eng.stream(src, send_args, dst, argv, dest_fs=dst_fs, **kw)
    except PipelineError as err:
        if not (with_s and refused_for_feature(err)):
            raise
    pool = pool_of(dst_fs)
    eng.say(
        f"{dst.host}:{pool} refused a resumable receive (no feature@extensible_dataset); "
        f"receiving without -s, so a cut stream there starts over (ZREP_RESUME=no skips "
        "this first attempt)",
        kw.get("dataset"),
        warning=True,
    )
    try:
        res = eng.stream(src, send_args, dst, [*recv_flags, dst_fs], dest_fs=dst_fs, **kw)
    except PipelineError as err:
        if refused_for_feature(err):
            err.message += f" (also without -s: the stream needs a feature {pool} lacks)"
        raise
    with _mutex:
        _unsupported.add((dst.host, pool))
    return res
