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

from . import crypto, steps, zfs_errors
from .context import Context
from .errors import HostKeyError, HostUnreachable, SplitBrain, StateError, ZrepqError
from .model import Snapshot, last_sent
from .names import validate_dataset, validate_host
from .requests import FailoverRequest, TakeoverRequest
from .results import RoleResult
from .sync import Run, replicate
from .zfs import Link, ZfsHost


def _split(name: str) -> tuple[str, str | None]:
    """`fs@snap` -> (fs, snap); `fs` -> (fs, None). Validated by the request."""
    fs, _, short = name.partition("@")
    return fs, short or None


def failover(ctx: Context, req: FailoverRequest) -> RoleResult:
    fs, short = _split(req.fs)
    local_only = req.local_only
    local = ctx.local
    info = local.require(fs)
    if not info.is_master:
        if info.src_host and info.src_host != ctx.host and info.dest_host == ctx.host:
            # Already done (a repeated message): this side is the standby now.
            message = f"{fs} is already standby; nothing to do"
            ctx.say(message, fs, level="notice")
            return RoleResult(
                fs, ctx.host, "standby", info.src_host, info.src_fs or "", message=message
            )
        raise StateError(f"{fs} not master. Cannot fail over", dataset=fs, host=ctx.host)
    remote_host = validate_host(req.other_host or info.dest_host or "")
    remote_fs = validate_dataset(info.dest_fs or "")
    dst = ctx.zfs(remote_host)
    result = RoleResult(fs, ctx.host, "standby", remote_host, remote_fs)
    with steps.lock(
        ctx, [(ctx.host, fs), (remote_host, remote_fs)], "failover", local_info=info
    ) as handle:
        ctx.say(f"Setting readonly on local {fs}, then syncing", fs)
        was_readonly = info.props.get("readonly")
        _readonly(ctx, local, fs, "on")
        try:
            if local_only:
                ctx.say(f"Failover for {fs} in LOCAL mode", fs)
                snaps = local.snapshots(fs)
                target = (
                    f"{fs}@{short}" if short else getattr(last_sent(snaps, ctx.tag), "name", None)
                )
                if target is None:
                    raise StateError(
                        f"No last synced snap found for {fs}. Cannot fail over", dataset=fs
                    )
                which = "specified snap" if short else "last sync"
                ctx.say(f"Rolling back to {which} {target}", fs)
                _release_newer(ctx, local, snaps, target)
                local.rollback(target, flags="-Rr")
                result.rolled_back_to = target
            elif short:
                ctx.say(f"Rolling back to local {fs}@{short}", fs)
                _release_newer(ctx, local, local.snapshots(fs), f"{fs}@{short}")
                local.rollback(f"{fs}@{short}", flags="-Rr")
                ctx.say(f"Rolling back {remote_host} to {remote_fs}@{short}", fs)
                _release_newer(ctx, dst, dst.snapshots(remote_fs), f"{remote_fs}@{short}")
                dst.rollback(f"{remote_fs}@{short}", flags="-r")
                result.rolled_back_to = f"{fs}@{short}"
            else:
                link = Link(local, fs, dst, remote_fs)
                res = replicate(ctx, link, handle, info, Run("failover"))
                result.synced = res.snapshot
        except ZrepqError as err:
            # Failover failed: stay master, writable as before.
            if was_readonly is None or was_readonly.source != "local":
                _readonly(ctx, local, fs, None)
            else:
                _readonly(ctx, local, fs, was_readonly.value)
            err.message = f"final sync failed. failover failed: {err.message}"
            raise
        ctx.say(f"Reversing master properties for {ctx.host}:{fs}", fs)
        local.set(fs, ctx.config.pair_props((remote_host, remote_fs), (ctx.host, fs)))
        local.inherit(fs, ctx.config.prop("master"))
    if not local_only:
        if ctx.peer is None:
            raise StateError(
                f"no way to reach {remote_host} for takeover -L; run it there", dataset=fs
            )
        ctx.say(f"Setting master on {remote_host}:{remote_fs}", fs)
        ctx.relay(ctx.peer.takeover_local(remote_host, remote_fs, tag=ctx.tag))
    return result


def takeover(ctx: Context, req: TakeoverRequest) -> RoleResult:
    fs, short = _split(req.fs)
    local_only = req.local_only
    local = ctx.local
    info = local.require(fs)
    remote_host = validate_host(req.other_host or info.src_host or "")
    remote_fs = validate_dataset(info.src_fs or "")
    if info.is_master and info.src_host == ctx.host:
        # Already master: a repeated takeover. Done, unless the other side also claims it.
        other = _remote_master(ctx, info.dest_host, info.dest_fs)
        if other:
            raise SplitBrain(
                f"{fs} is master here and {info.dest_host}:{info.dest_fs} also "
                "claims master. Split brain detected",
                dataset=fs,
            )
        message = f"{fs} is already master; nothing to do"
        ctx.say(message, fs, level="notice")
        return RoleResult(
            fs, ctx.host, "master", info.dest_host or "", info.dest_fs or "", message=message
        )
    if not local_only:
        if ctx.peer is None:
            raise StateError(f"no way to reach {remote_host} to ask for failover", dataset=fs)
        ctx.say(f"Starting failover from remote side {remote_host}", fs)
        ctx.relay(ctx.peer.failover(remote_host, remote_fs, tag=ctx.tag))
        return RoleResult(
            fs,
            ctx.host,
            "master",
            remote_host,
            remote_fs,
            message="failover requested from the master side",
        )
    if not req.force and _remote_master(ctx, remote_host, remote_fs):
        raise SplitBrain(
            f"{remote_host}:{remote_fs} is still master; taking over now would make two "
            "masters. Run failover there, or takeover with force if it is truly gone",
            dataset=fs,
            host=remote_host,
        )
    result = RoleResult(fs, ctx.host, "master", remote_host, remote_fs)
    with steps.lock(ctx, [(ctx.host, fs)], "takeover", local_info=info):
        crypto.ensure_key(ctx, local, info)  # before anything is made writable
        if info.resume_token:
            # This side becomes master: it receives nothing more, so the partial receive it
            # holds would never be resumed (and would be stale once it is standby again).
            ctx.say(f"aborting the partial receive on {ctx.host}:{fs}", fs, warning=True)
            local.abort_resume(fs)
        _readonly(ctx, local, fs, None)
        if short:
            ctx.say(
                f"WARNING: Before takeover, rolling {fs} to {short}; newer snapshots are destroyed",
                fs,
                warning=True,
            )
            _release_newer(ctx, local, local.snapshots(fs), f"{fs}@{short}")
            local.rollback(f"{fs}@{short}", flags="-Rr")
            result.rolled_back_to = f"{fs}@{short}"
        ctx.say(f"Setting master properties for {ctx.host}:{fs}", fs)
        local.set(fs, ctx.config.pair_props((ctx.host, fs), (remote_host, remote_fs)))
        local.set(fs, {ctx.config.prop("master"): "yes"})
        if info.type == "filesystem" and not info.mounted:
            # zrep's own typo, kept: scripts compare these lines.
            ctx.say(f"eMounting {ctx.host}:{fs}", fs)
            try:
                local.mount(fs)
            except ZrepqError as e:
                why = (
                    " (only root mounts on Linux and the worker is not root: mount it as root, "
                    "or leave it to zfs-mount.service)"
                    if zfs_errors.root_only(getattr(e, "stderr", None) or "")
                    else ""
                )
                ctx.say(f"could not mount {fs}: {e}{why}", fs, warning=True)
    return result


def _readonly(ctx: Context, zh: ZfsHost, fs: str, value: str | None) -> None:
    """Set (None: inherit) `readonly`. A worker that is not root cannot remount a mounted
    filesystem: OpenZFS sets the property and refuses libzfs's remount; the kernel applies
    the property to the mounted filesystem itself, so this goes on, and says so."""
    if not zh.set_mount_option(fs, "readonly", value):
        ctx.say(
            f"readonly={'inherited' if value is None else value} set on {zh.host}:{fs}; its "
            "remount is root's (the worker is not root): the kernel applies it to the mount",
            fs,
            warning=True,
        )


def _release_newer(ctx: Context, zh: ZfsHost, snaps: list[Snapshot], target: str) -> None:
    """Release our holds from the snapshots a `rollback -r` to `target` destroys (a held one
    would refuse it: "dataset is busy"). One call, none when none of them has a hold."""
    at = next((s for s in snaps if s.name == target), None)
    if at is not None:
        steps.release_stale(ctx, zh, [s for s in snaps if s.createtxg > at.createtxg])


def _remote_master(ctx: Context, host: str | None, fs: str | None) -> bool:
    """Does the other side claim master? Unreachable counts as no (takeover is for that)."""
    if not host or not fs:
        return False
    try:
        return ctx.zfs(host).info(fs).is_master
    except HostKeyError:
        raise  # a changed host key is never "the host is down"
    except HostUnreachable:
        ctx.say(f"{host} is unreachable; assuming it is down", fs, warning=True)
        return False
    except ZrepqError:
        return False
