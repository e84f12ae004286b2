"""Side operations: snaponly, clear, changeconfig, sentsync."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import StateError
from .model import next_snapname, zrep_snapshots
from .names import validate_dataset, validate_host, validate_snapshot
from .zfs import ZfsHost

if TYPE_CHECKING:
    from .engine import Engine


def snaponly(eng: Engine, fs: str) -> str:
    """Make the next zrep snapshot without sending it (the first half of sync)."""
    validate_dataset(fs)
    local = eng.local
    info = local.require(fs)
    if info.src_host != eng.host:
        raise StateError(
            f"we are not master host for {fs}: master is {info.src_host}, we are {eng.host}",
            dataset=fs,
            host=eng.host,
        )
    with eng.lock([(eng.host, fs)], "snaponly", local_info=info):
        name = f"{fs}@{next_snapname(local.snapshots(fs), eng.tag)}"
        local.snapshot(name, recursive=eng.config.recursive)
    return name


def clear(eng: Engine, fs: str) -> list[str]:
    """Remove the tag's snapshots and properties from a local fs (not the fs itself).

    zrep's "WARNING: Removing all zrep configs ..." and its pause come before this, from the
    command line (the engine does not wait for anyone).
    """
    validate_dataset(fs)
    local = eng.local
    local.info(fs)
    with eng.lock([(eng.host, fs)], "clear"):
        return clear_local(eng, local, fs)


def clear_local(eng: Engine, local: ZfsHost, fs: str) -> list[str]:
    """zrep's _clearsnaps and _clearvars, with their lines (a failed init prints them too)."""
    eng.say(f"Destroying any zrep-related snapshots from {fs}", fs)
    destroyed = []
    ours = zrep_snapshots(local.snapshots(fs), eng.tag)
    eng.release_stale(local, ours)  # a held snapshot cannot be destroyed
    for s in ours:
        local.destroy(s.name, recursive=True)
        destroyed.append(s.name)
    eng.say(f"Removing zrep-related properties from {fs}", fs)
    res = local.zfs("get", "-H", "-o", "property,source", "all", fs)
    prefix = f"{eng.tag}:"
    for line in res.stdout.splitlines():
        prop, _, source = line.partition("\t")
        if prop.startswith(prefix) and source in ("local", "received"):
            local.inherit(fs, prop)
    return destroyed


def changeconfig(
    eng: Engine, fs: str, host: str, other_fs: str, *, force: bool = False, dest_side: bool = False
) -> None:
    """`changeconfig [-f] fs desthost destfs` or, on the standby, `-d destfs srchost srcfs`."""
    validate_dataset(fs)
    validate_host(host)
    validate_dataset(other_fs)
    local = eng.local
    if not local.exists(fs):
        raise StateError(f"filesystem {fs} must exist already", dataset=fs)
    if not force and not zrep_snapshots(local.snapshots(fs), eng.tag):
        raise StateError(
            f"No pre-existing zrep snapshots found on {fs}: {fs} is not initialized for zrep. "
            "cannot change config. Use zrep init instead",
            dataset=fs,
        )
    p = eng.config.prop
    if dest_side:
        props = {
            p("src-fs"): other_fs,
            p("src-host"): host,
            p("dest-fs"): fs,
            p("dest-host"): eng.host,
        }
    else:
        props = {
            p("src-fs"): fs,
            p("src-host"): eng.host,
            p("dest-fs"): other_fs,
            p("dest-host"): host,
        }
    props[p("savecount")] = str(eng.config.save_count)
    local.set(fs, props)


def sentsync(eng: Engine, snapshot: str, *, local_only: bool = False) -> None:
    """Recovery: declare `fs@TAG_NNNNNN` the last sent snapshot (on both sides unless -L)."""
    fs, short = validate_snapshot(snapshot)
    local = eng.local
    snaps = local.snapshots(fs)
    target = next((s for s in snaps if s.short == short), None)
    if target is None:
        raise StateError(f"Expected snapshot for {snapshot}. Cannot continue", dataset=fs)
    if target.zname(eng.tag) is None:
        raise StateError(
            f"{snapshot} does not follow zrep naming standards. Cannot continue", dataset=fs
        )
    info = local.info(fs)
    with eng.lock([(eng.host, fs)], "sentsync", local_info=info):
        for s in reversed(snaps):  # newest first, as zrep clears them
            if s.sent is not None:
                eng.say(f"WARNING: clearing sent value from {s.name}", fs, warning=True)
                local.inherit(s.name, f"{eng.tag}:sent")
        dst = None
        if not local_only:
            if not info.dest_host or not info.dest_fs:
                raise StateError(f"Problem getting zrep properties for fs {fs}", dataset=fs)
            dst = eng.zfs(info.dest_host)
            eng.mark_sent(local, fs, dst, info.dest_fs, [target])
        else:
            local.set(target.name, {f"{eng.tag}:sent": _now()})
        local.set(fs, {f"{eng.tag}:master": "yes"})
        if dst is not None and info.dest_fs:
            eng.move_holds(
                local, fs, dst, info.dest_fs, short,
                src_snaps=snaps, dst_snaps=dst.snapshots(info.dest_fs),
            )  # fmt: skip


def _now() -> str:
    import time

    return str(int(time.time()))
