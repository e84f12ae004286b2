"""pause / resume a pair, and the sync error flag: zrepq's own state on the master fs.

Kept in `zrepq:<tag>:*` user properties on the dataset itself, so it survives a Redis flush
and a worker's death, and an admin with only `zfs get all` can see it. Upstream zrep reads
none of these: a zrep run from cron syncs a paused dataset anyway (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import getpass
import time

from .context import Context
from .errors import StateError, ZrepqError
from .model import DatasetInfo
from .requests import PauseRequest, ResumeRequest
from .zfs import ZfsHost

PAUSE_KEYS = ("paused", "paused-by", "paused-reason", "paused-expire")
ERROR_KEYS = ("last-error", "last-error-time", "last-error-snapshot")
ROLLBACK_KEYS = ("rolled-back-to", "rolled-back-time")


class Paused(StateError):
    kind = "paused"
    retryable = True


def clean(text: str, limit: int = 200) -> str:
    """One line, bounded: property values are not a log."""
    line = " ".join(text.split())
    return line[:limit]


def pause(ctx: Context, req: PauseRequest) -> dict[str, str]:
    fs, reason, by = req.fs, req.reason, req.by
    local = ctx.local
    local.require(fs)
    values = {
        "paused": str(int(time.time())),
        "paused-by": clean(by or f"{getpass.getuser()}@{ctx.host}", 100),
        "paused-reason": clean(reason) or "-",
        "paused-expire": "yes" if req.expire else "no",
    }
    local.set_q(fs, values)
    ctx.say(f"{fs} paused" + (f": {reason}" if reason else ""), fs)
    return values


def resume(ctx: Context, req: ResumeRequest) -> bool:
    """Take the pause off; False when it was not paused."""
    fs = req.fs
    local = ctx.local
    info = local.require(fs)
    if not info.paused:
        return False
    local.clear_q(info, *PAUSE_KEYS)
    ctx.say(f"{fs} resumed", fs)
    return True


def check_not_paused(info: DatasetInfo, host: str, *, for_expire: bool = False) -> None:
    if not info.paused:
        return
    if for_expire and info.q("paused-expire") != "yes":
        return
    since = time.strftime("%Y/%m/%d-%H:%M:%S", time.localtime(int(info.q("paused") or 0)))
    reason = info.q("paused-reason")
    raise Paused(
        f"{info.name} is paused since {since} by {info.q('paused-by') or '?'}"
        + (f" ({reason})" if reason and reason != "-" else "")
        + "; resume it first"
        + ("" if for_expire else ", or sync with ignore-pause"),
        dataset=info.name,
        host=host,
    )


def record_error(zh: ZfsHost, fs: str, snapshot: str | None, err: ZrepqError) -> None:
    """Raise the error flag (best effort: the sync's own error is what matters)."""
    with contextlib.suppress(ZrepqError):
        zh.set_q(
            fs,
            {
                "last-error": clean(err.message.splitlines()[0] if err.message else err.kind)
                or err.kind,
                "last-error-time": str(int(time.time())),
                "last-error-snapshot": snapshot or "-",
            },
        )


def clear_error(zh: ZfsHost, info: DatasetInfo) -> None:
    zh.clear_q(info, *ERROR_KEYS, *ROLLBACK_KEYS)


def record_rollback(zh: ZfsHost, fs: str, snapshot: str) -> None:
    zh.set_q(fs, {"rolled-back-to": snapshot, "rolled-back-time": str(int(time.time()))})
