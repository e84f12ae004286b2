"""init: seed the standby with a full stream, exactly as zrep lays it out on disk.

Properties src-fs/src-host/dest-fs/dest-host/savecount on the source, snapshot `TAG_000000`,
`zfs send -p | zfs recv -u -o readonly=on -F`, `TAG:sent` on the snapshot, `TAG:master=yes`
last (so `sync all` never picks up a half-made pair).

Fixed on purpose (zrep issue 145): with resume on (the default), a failed init that left a
partial receive keeps it and the next init resumes it; otherwise (resume off, or nothing
arrived) it undoes what it did, and destroys the destination only if init created it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import resume as resumable
from .errors import StateError, ZrepqError
from .model import DatasetInfo, Snapshot, next_snapname
from .names import first_snapname, validate_dataset, validate_host
from .ports import LockHandle
from .results import InitResult
from .zfs import DatasetMissing, ZfsHost

if TYPE_CHECKING:
    from .engine import Engine


def init(
    eng: Engine,
    fs: str,
    dest_host: str,
    dest_fs: str,
    *,
    force: bool = False,
    resume: bool | None = None,
) -> InitResult:
    validate_dataset(fs)
    validate_host(dest_host)
    validate_dataset(dest_fs)
    resume = eng.config.resume if resume is None else resume
    local = eng.local
    info = local.info(fs)  # DatasetMissing if fs does not exist
    local.require_type(info)
    dst = eng.zfs(dest_host)
    t0 = time.monotonic()
    with eng.lock([(eng.host, fs), (dest_host, dest_fs)], "init") as handle:
        if info.configured:
            if info.is_master:
                raise StateError(
                    f"{fs} is already a zrep master ({eng.tag}:master detected)",
                    dataset=fs,
                    host=eng.host,
                )
            if not resume:
                raise StateError(
                    f"{fs} is at least partially configured by zrep. "
                    f"To re-initialize, first use zrep clear {fs}",
                    dataset=fs,
                    host=eng.host,
                )
            return _resume_init(
                eng, fs, info.dest_host or dest_host, info.dest_fs or dest_fs, handle, t0
            )
        existed = dst.exists(dest_fs)
        if existed and not force:
            raise StateError(
                f"{dest_host}:{dest_fs} already exists! Will not overwrite without -f",
                dataset=fs,
                host=dest_host,
            )
        eng.say(f"Setting zrep properties on {fs}", fs)
        p = eng.config.prop
        local.set(
            fs,
            {
                p("src-fs"): fs,
                p("src-host"): eng.host,
                p("dest-fs"): dest_fs,
                p("dest-host"): dest_host,
                p("savecount"): str(eng.config.save_count),
            },
        )
        try:
            if eng.config.create_flags:
                eng.say("Creating  destination filesystem as separate step", fs)  # sic
                dst.create(dest_fs, eng.config.create_flags)
            snap = f"{fs}@{first_snapname(eng.tag)}"
            if any(s.zname(eng.tag) for s in local.snapshots(fs)):
                # Leftovers of an earlier pair under this tag: continue the sequence.
                snap = f"{fs}@{next_snapname(local.snapshots(fs), eng.tag)}"
            eng.say(f"Creating snapshot {snap}", fs)
            local.snapshot(snap, recursive=eng.config.recursive)
            eng.say(f"Sending initial replication stream to {dest_host}:{dest_fs}", fs)
            send = (["-R"] if eng.config.recursive else []) + list(eng.config.send_flags)
            recv = ["-u"]
            if not eng.config.create_flags:
                recv += ["-o", "readonly=on"]
            recv += ["-F", "-x", f"{eng.tag}:master"]
            nbytes, _ = resumable.stream_into(
                eng,
                local,
                [*send, "-p", snap],
                dst,
                recv,
                dest_fs,
                resume=resume,
                dataset=fs,
                snapshot=snap,
                base=None,
                handle=handle,
            )
        except ZrepqError as err:
            if resume and _partial_left(dst, dest_fs):
                err.message += f". RESUME set: not clearing {fs}; run init again to resume"
                raise
            _clear_after_failure(eng, local, fs, dst, dest_fs, destroy_remote=not existed)
            err.message = f"Error transferring to {dest_host}:{dest_fs}: {err.message}. Resetting"
            raise
        _finish(eng, local, fs, dst, dest_fs, snap, info)
    return InitResult(fs, eng.host, dest_host, dest_fs, snap, nbytes, time.monotonic() - t0)


def _resume_init(
    eng: Engine, fs: str, dest_host: str, dest_fs: str, handle: LockHandle, t0: float
) -> InitResult:
    eng.say(f"{fs} is at least partially configured by zrep", fs)
    local = eng.local
    dst = eng.zfs(dest_host)
    token = dst.info(dest_fs).resume_token if dst.exists(dest_fs) else None
    if not token:
        raise StateError(
            f"Partial init of {fs} detected but no resume token found. "
            f"Suggest you zrep clear {fs} and start again",
            dataset=fs,
        )
    eng.say("Partially complete init detected. Attempting to resume send", fs)
    snaps = [s for s in local.snapshots(fs) if s.zname(eng.tag)]
    if not snaps:
        raise StateError(f"{fs} has no {eng.tag} snapshot to resume", dataset=fs)
    snap = snaps[0].name
    nbytes, _ = eng.stream(
        local,
        ["-t", token],
        dst,
        ["-s", dest_fs],
        dataset=fs,
        snapshot=snap,
        base=None,
        dest_fs=dest_fs,
        handle=handle,
        resumed=True,
    )
    _finish(eng, local, fs, dst, dest_fs, snap, local.info(fs))
    return InitResult(
        fs, eng.host, dest_host, dest_fs, snap, nbytes, time.monotonic() - t0, resumed=True
    )


def _finish(
    eng: Engine, local: ZfsHost, fs: str, dst: ZfsHost, dest_fs: str, snap: str, info: DatasetInfo
) -> None:
    if eng.config.create_flags:
        eng.say(f"setting readonly on {dst.host}:{dest_fs} manually", fs)
        dst.set(dest_fs, {"readonly": "on"})
    for prop, value in eng.config.init_remote_properties:
        dst.set(dest_fs, {prop: value})
    short = snap.split("@", 1)[1]
    mp = info.props.get("mountpoint")
    if mp is not None and mp.source == "local":
        # `send -p` carried it as a received property: the standby mounts where it likes.
        eng.say("clearing mountpoint value for remote", fs)
        dst.inherit(dest_fs, "mountpoint")
    eng.mark_sent(local, fs, dst, dest_fs, [Snapshot(snap, "", 0, 0)])
    eng.move_holds(local, fs, dst, dest_fs, short)
    local.set(fs, {f"{eng.tag}:master": "yes"})
    eng.say(f"Initialization copy of {fs} to {dst.host}:{dest_fs} complete", fs)
    eng.say("Filesystem will not be mounted", fs)  # received with -u, as zrep says


def _partial_left(dst: ZfsHost, dest_fs: str) -> bool:
    """Did the failed init leave a partial receive to resume? Nothing to resume (the stream
    never started: an unreachable host, a refused key) means a clean slate, as without resume;
    when the destination cannot be read, keep everything (the safe side)."""
    try:
        return dst.info(dest_fs).resume_token is not None
    except DatasetMissing:
        return False
    except ZrepqError:
        return True


def _clear_after_failure(
    eng: Engine, local: ZfsHost, fs: str, dst: ZfsHost, dest_fs: str, *, destroy_remote: bool
) -> None:
    """Back to the state before init; the destination only if init created it."""
    from .admin import clear_local

    try:
        if destroy_remote and dst.exists(dest_fs):
            dst.destroy(dest_fs, recursive=True)
    except ZrepqError as e:
        eng.say(f"could not remove the partial {dst.host}:{dest_fs}: {e}", fs, warning=True)
    try:
        clear_local(eng, local, fs)
    except ZrepqError as e:
        eng.say(f"could not clear zrep state from {fs}: {e}", fs, warning=True)
