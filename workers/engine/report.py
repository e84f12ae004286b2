"""status, list, lastsent, uptodate: read-only reports, two `zfs` calls for a whole host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import NotConfigured, StateError
from .model import DatasetInfo, last_sent
from .names import validate_dataset
from .results import StatusRow

if TYPE_CHECKING:
    from .engine import Engine


def masters(eng: Engine) -> list[str]:
    """Filesystems this host is master of: local `TAG:master=yes` and src-host = this host."""
    return sorted(
        name
        for name, info in eng.local.all_configured().items()
        if info.is_master and info.src_host == eng.host
    )


def _infos(eng: Engine, fs: Sequence[str], *, all_fs: bool) -> list[DatasetInfo]:
    configured = eng.local.all_configured()
    if fs:
        out = []
        for name in fs:
            validate_dataset(name)
            info = configured.get(name)
            if info is None:
                raise NotConfigured(
                    f"{name} is not a zrep registered filesystem", dataset=name, host=eng.host
                )
            out.append(info)
        return out
    if all_fs:
        return [configured[n] for n in sorted(configured)]
    return [
        configured[n]
        for n in sorted(configured)
        if configured[n].is_master and configured[n].src_host == eng.host
    ]


def status(eng: Engine, fs: Sequence[str] = (), *, all_fs: bool = False) -> list[StatusRow]:
    infos = _infos(eng, fs, all_fs=all_fs)
    sent = eng.local.all_last_sent() if infos else {}
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
                **extras(info),
            )
        )
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
    return out


def list_names(eng: Engine, fs: Sequence[str] = (), *, masters_only: bool = False) -> list[str]:
    if masters_only:
        names = masters(eng)
        return [n for n in names if n in fs] if fs else names
    configured = eng.local.all_configured()
    for name in fs:
        validate_dataset(name)
        if not eng.local.exists(name):
            raise StateError(f"Expecting filesystem, but got {name}", dataset=name)
    return [n for n in fs if n in configured] if fs else sorted(configured)


def list_verbose(eng: Engine, fs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per fs: every local/received property (as zrep's `list -v` prints) and last sent."""
    names = list(fs) or list_names(eng)
    out = []
    for name in names:
        validate_dataset(name)
        res = eng.local.zfs(
            "get", "-H", "-o", "property,value", "-s", "local,received", "all", name
        )
        props = [tuple(line.split("\t", 1)) for line in res.stdout.splitlines() if line]
        sent = last_sent(eng.local.snapshots(name), eng.tag)
        out.append(
            {
                "dataset": name,
                "properties": [list(p) for p in props],
                "last_sent": sent.name if sent else None,
            }
        )
    return out


def list_snapshots(eng: Engine, fs: Sequence[str] = ()) -> str:
    """zrep's `list -s`: the plain `zfs list -r -t snapshot -o name,creation` output."""
    names = list(fs) or masters(eng)
    chunks = []
    for name in names:
        validate_dataset(name)
        chunks.append(
            eng.local.zfs("list", "-r", "-t", "snapshot", "-o", "name,creation", name).stdout
        )
    return "".join(chunks)


def lastsent(eng: Engine, fs: str) -> str | None:
    validate_dataset(fs)
    snap = last_sent(eng.local.snapshots(fs), eng.tag)
    return snap.name if snap else None


def uptodate(eng: Engine, fs: str) -> bool:
    """No writes since the last snapshot (zrep reads `written`; unknown counts as not)."""
    validate_dataset(fs)
    return eng.local.info(fs).written == 0
