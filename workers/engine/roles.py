"""failover (run on the master) and takeover (run on the standby), without split brain.

failover: lease both sides (fixed order), `readonly=on`, one last sync (or with -L roll back to
the last sent snapshot), swap the src/dest properties, `zfs inherit TAG:master`, release, then
ask the other side for `takeover -L` through the `Peer` port (the Celery layer routes it to
that host's worker).

takeover -L: lease, `zfs inherit readonly`, optional rollback, swap properties, `TAG:master=yes`,
mount. It refuses while the other side is reachable and still claims master (unless forced):
that is exactly the split brain zrep warns about and then walks into.

Both check state first, so a re-delivered message does no harm: a failover of a dataset that
is already standby, or a takeover of one that is already master with the other side standby,
returns what is already true.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import HostKeyError, HostUnreachable, SplitBrain, StateError, ZrepqError
from .model import Snapshot, last_sent
from .names import validate_dataset, validate_host, validate_snapshot
from .results import RoleResult
from .sync import replicate

if TYPE_CHECKING:
    from .engine import Engine
    from .zfs import ZfsHost


def _split(name: str) -> tuple[str, str | None]:
    if "@" in name:
        fs, short = validate_snapshot(name)
        return fs, short
    return validate_dataset(name), None


def failover(
    eng: Engine,
    fs: str,
    *,
    local_only: bool = False,
    snapshot: str | None = None,
    host: str | None = None,
) -> RoleResult:
    fs, short = _split(fs)
    if snapshot:
        _, short = validate_snapshot(snapshot)
    local = eng.local
    info = local.require(fs)
    if not info.is_master:
        if info.src_host and info.src_host != eng.host and info.dest_host == eng.host:
            # Already done (a repeated message): this side is the standby now.
            message = f"{fs} is already standby; nothing to do"
            eng.say(message, fs, level="notice")
            return RoleResult(
                fs, eng.host, "standby", info.src_host, info.src_fs or "", message=message
            )
        raise StateError(f"{fs} not master. Cannot fail over", dataset=fs, host=eng.host)
    remote_host = validate_host(host or info.dest_host or "")
    remote_fs = validate_dataset(info.dest_fs or "")
    dst = eng.zfs(remote_host)
    result = RoleResult(fs, eng.host, "standby", remote_host, remote_fs)
    with eng.lock(
        [(eng.host, fs), (remote_host, remote_fs)], "failover", local_info=info
    ) as handle:
        eng.say(f"Setting readonly on local {fs}, then syncing", fs)
        was_readonly = info.props.get("readonly")
        local.set(fs, {"readonly": "on"})
        try:
            if local_only:
                eng.say(f"Failover for {fs} in LOCAL mode", fs)
                snaps = local.snapshots(fs)
                target = (
                    f"{fs}@{short}" if short else getattr(last_sent(snaps, eng.tag), "name", None)
                )
                if target is None:
                    raise StateError(
                        f"No last synced snap found for {fs}. Cannot fail over", dataset=fs
                    )
                which = "specified snap" if short else "last sync"
                eng.say(f"Rolling back to {which} {target}", fs)
                _release_newer(eng, local, snaps, target)
                local.rollback(target, flags="-Rr")
                result.rolled_back_to = target
            elif short:
                eng.say(f"Rolling back to local {fs}@{short}", fs)
                _release_newer(eng, local, local.snapshots(fs), f"{fs}@{short}")
                local.rollback(f"{fs}@{short}", flags="-Rr")
                eng.say(f"Rolling back {remote_host} to {remote_fs}@{short}", fs)
                _release_newer(eng, dst, dst.snapshots(remote_fs), f"{remote_fs}@{short}")
                dst.rollback(f"{remote_fs}@{short}", flags="-r")
                result.rolled_back_to = f"{fs}@{short}"
            else:
                res = replicate(
                    eng, local, fs, dst, remote_fs, handle, src_info=info, kind="failover"
                )
                result.synced = res.snapshot
        except ZrepqError as err:
            # Failover failed: stay master, writable as before.
            if was_readonly is None or was_readonly.source != "local":
                local.inherit(fs, "readonly")
            else:
                local.set(fs, {"readonly": was_readonly.value})
            err.message = f"final sync failed. failover failed: {err.message}"
            raise
        eng.say(f"Reversing master properties for {eng.host}:{fs}", fs)
        p = eng.config.prop
        local.set(
            fs,
            {
                p("dest-fs"): fs,
                p("dest-host"): eng.host,
                p("src-fs"): remote_fs,
                p("src-host"): remote_host,
            },
        )
        local.inherit(fs, p("master"))
    if not local_only:
        if eng.peer is None:
            raise StateError(
                f"no way to reach {remote_host} for takeover -L; run it there", dataset=fs
            )
        eng.say(f"Setting master on {remote_host}:{remote_fs}", fs)
        eng.relay(eng.peer.takeover_local(remote_host, remote_fs, tag=eng.tag))
    return result


def takeover(
    eng: Engine,
    fs: str,
    *,
    local_only: bool = False,
    snapshot: str | None = None,
    host: str | None = None,
    force: bool = False,
) -> RoleResult:
    fs, short = _split(fs)
    if snapshot:
        _, short = validate_snapshot(snapshot)
    local = eng.local
    info = local.require(fs)
    remote_host = validate_host(host or info.src_host or "")
    remote_fs = validate_dataset(info.src_fs or "")
    if info.is_master and info.src_host == eng.host:
        # Already master: a repeated takeover. Done, unless the other side also claims it.
        other = _remote_master(eng, info.dest_host, info.dest_fs)
        if other:
            raise SplitBrain(
                f"{fs} is master here and {info.dest_host}:{info.dest_fs} also "
                "claims master. Split brain detected",
                dataset=fs,
            )
        message = f"{fs} is already master; nothing to do"
        eng.say(message, fs, level="notice")
        return RoleResult(
            fs, eng.host, "master", info.dest_host or "", info.dest_fs or "", message=message
        )
    if not local_only:
        if eng.peer is None:
            raise StateError(f"no way to reach {remote_host} to ask for failover", dataset=fs)
        eng.say(f"Starting failover from remote side {remote_host}", fs)
        eng.relay(eng.peer.failover(remote_host, remote_fs, tag=eng.tag))
        return RoleResult(
            fs,
            eng.host,
            "master",
            remote_host,
            remote_fs,
            message="failover requested from the master side",
        )
    if not force and _remote_master(eng, remote_host, remote_fs):
        raise SplitBrain(
            f"{remote_host}:{remote_fs} is still master; taking over now would make two "
            "masters. Run failover there, or takeover with force if it is truly gone",
            dataset=fs,
            host=remote_host,
        )
    result = RoleResult(fs, eng.host, "master", remote_host, remote_fs)
    with eng.lock([(eng.host, fs)], "takeover", local_info=info):
        if info.resume_token:
            # This side becomes master: it receives nothing more, so the partial receive it
            # holds would never be resumed (and would be stale once it is standby again).
            eng.say(f"aborting the partial receive on {eng.host}:{fs}", fs, warning=True)
            local.abort_resume(fs)
        local.inherit(fs, "readonly")
        if short:
            eng.say(
                f"WARNING: Before takeover, rolling {fs} to {short}; newer snapshots are destroyed",
                fs,
                warning=True,
            )
            _release_newer(eng, local, local.snapshots(fs), f"{fs}@{short}")
            local.rollback(f"{fs}@{short}", flags="-Rr")
            result.rolled_back_to = f"{fs}@{short}"
        eng.say(f"Setting master properties for {eng.host}:{fs}", fs)
        p = eng.config.prop
        local.set(
            fs,
            {
                p("src-fs"): fs,
                p("src-host"): eng.host,
                p("dest-fs"): remote_fs,
                p("dest-host"): remote_host,
            },
        )
        local.set(fs, {p("master"): "yes"})
        if info.type == "filesystem" and not info.mounted:
            # zrep's own typo, kept: scripts compare these lines.
            eng.say(f"eMounting {eng.host}:{fs}", fs)
            try:
                local.mount(fs)
            except ZrepqError as e:
                eng.say(f"could not mount {fs}: {e}", fs, warning=True)
    return result


def _release_newer(eng: Engine, zh: ZfsHost, snaps: list[Snapshot], target: str) -> None:
    """Release our holds from the snapshots a `rollback -r` to `target` destroys (a held one
    would refuse it: "dataset is busy"). One call, none when none of them has a hold."""
    at = next((s for s in snaps if s.name == target), None)
    if at is not None:
        eng.release_stale(zh, [s for s in snaps if s.createtxg > at.createtxg])


def _remote_master(eng: Engine, host: str | None, fs: str | None) -> bool:
    """Does the other side claim master? Unreachable counts as no (takeover is for that)."""
    if not host or not fs:
        return False
    try:
        return eng.zfs(host).info(fs).is_master
    except HostKeyError:
        raise  # a changed host key is never "the host is down"
    except HostUnreachable:
        eng.say(f"{host} is unreachable; assuming it is down", fs, warning=True)
        return False
    except ZrepqError:
        return False
