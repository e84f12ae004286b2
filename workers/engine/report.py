"""status, list, lastsent, uptodate: read-only reports, two `zfs` calls for a whole host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import crypto
from .context import Context
from .errors import NotConfigured, StateError
from .formats import list_verbose_text, names_text
from .model import DatasetInfo, last_sent
from .requests import LastsentRequest, ListRequest, StatusRequest, UptodateRequest
from .results import Listing, StatusRow


def masters(ctx: Context) -> list[str]:
    """Filesystems this host is master of: local `TAG:master=yes` and src-host = this host."""
    return sorted(
        name
        for name, info in ctx.local.all_configured().items()
        if info.is_master and info.src_host == ctx.host
    )


def _infos(ctx: Context, fs: Sequence[str], *, all_fs: bool) -> list[DatasetInfo]:
    configured = ctx.local.all_configured()
    if fs:
        out = []
        for name in fs:
            info = configured.get(name)
            if info is None:
                raise NotConfigured(
                    f"{name} is not a zrep registered filesystem", dataset=name, host=ctx.host
                )
            out.append(info)
        return out
    if all_fs:
        return [configured[n] for n in sorted(configured)]
    return [
        configured[n]
        for n in sorted(configured)
        if configured[n].is_master and configured[n].src_host == ctx.host
    ]


def status(ctx: Context, req: StatusRequest) -> list[StatusRow]:
    infos = _infos(ctx, req.fs, all_fs=req.all)
    sent = ctx.local.all_last_sent() if infos else {}
    rows = []
    for info in infos:
        snap = sent.get(info.name)
        rows.append(
            StatusRow(
                dataset=info.name,
                src_fs=info.src_fs or "",
                src_host=info.src_host or "",
                dest_fs=info.dest_fs or "",
                dest_host=info.dest_host or "",
                master=info.is_master,
                last_sent=snap.name if snap else None,
                last_sent_time=snap.sent if snap else None,
                savecount=info.savecount,
                tag=ctx.tag,
                **extras(info),
            )
        )
    if req.verbose:
        masters_ = [(r.dest_host, r.dest_fs) for r in rows if r.master and r.dest_host]
        keys = crypto.standby_keys(ctx, masters_) if masters_ else {}
        for r in rows:
            r.standby_keystatus = keys.get((r.dest_host, r.dest_fs))
    return rows


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def extras(info: DatasetInfo) -> dict[str, Any]:
    """Pause, error flag and deliberate rollback, from zrepq's own properties."""
    out: dict[str, Any] = {}
    if info.paused:
        reason = info.q("paused-reason")
        out["paused"] = {
            "since": _int(info.q("paused")),
            "by": info.q("paused-by"),
            "reason": None if reason in (None, "-") else reason,
            "expire": info.q("paused-expire") == "yes",
        }
    if info.q("last-error") is not None:
        snap = info.q("last-error-snapshot")
        out["error"] = {
            "message": info.q("last-error"),
            "time": _int(info.q("last-error-time")),
            "snapshot": None if snap in (None, "-") else snap,
        }
    if info.q("rolled-back-to") is not None:
        out["rolled_back"] = {
            "snapshot": info.q("rolled-back-to"),
            "time": _int(info.q("rolled-back-time")),
        }
    if info.q("bookmark-base") is not None:
        out["from_bookmark"] = {
            "bookmark": info.q("bookmark-base"),
            "time": _int(info.q("bookmark-base-time")),
        }
    return out


def listing(ctx: Context, req: ListRequest) -> Listing:
    """zrep's `list`: the names (`-L`: masters only), `-v` every property, or `-s` the
    snapshots; with zrep's text for each."""
    if req.snapshots:
        return Listing(text=list_snapshots(ctx, req.fs))
    if req.verbose:
        entries = list_verbose(ctx, req.fs)
        return Listing(list_verbose_text(entries, blank_between=not req.fs), entries=entries)
    names = list_names(ctx, req.fs, masters_only=req.masters_only)
    return Listing(names_text(names), names=names)


def list_names(ctx: Context, fs: Sequence[str] = (), *, masters_only: bool = False) -> list[str]:
    if masters_only:
        names = masters(ctx)
        return [n for n in names if n in fs] if fs else names
    configured = ctx.local.all_configured()
    for name in fs:
        if not ctx.local.exists(name):
            raise StateError(f"Expecting filesystem, but got {name}", dataset=name)
    return [n for n in fs if n in configured] if fs else sorted(configured)


def list_verbose(ctx: Context, fs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per fs: every local/received property (as zrep's `list -v` prints) and last sent."""
    names = list(fs) or list_names(ctx)
    out = []
    for name in names:
        props = ctx.local.local_props(name)
        sent = last_sent(ctx.local.snapshots(name), ctx.tag)
        out.append({"dataset": name, "properties": props, "last_sent": sent.name if sent else None})
    return out


def list_snapshots(ctx: Context, fs: Sequence[str] = ()) -> str:
    """zrep's `list -s`: the plain `zfs list -r -t snapshot -o name,creation` output."""
    return "".join(ctx.local.snapshot_table(name) for name in list(fs) or masters(ctx))


def lastsent(ctx: Context, req: LastsentRequest) -> str | None:
    snap = last_sent(ctx.local.snapshots(req.fs), ctx.tag)
    return snap.name if snap else None


def uptodate(ctx: Context, req: UptodateRequest) -> bool:
    """No writes since the last snapshot (zrep reads `written`; unknown counts as not)."""
    return ctx.local.info(req.fs).written == 0
