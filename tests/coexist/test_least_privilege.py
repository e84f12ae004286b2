"""Least privilege (issue 15, point 3): zrepq's engine with every zfs command run as a user
that is not root (`nobody`), allowed what `docs/operations.md` grants with one `zfs allow`
line per side (both lines on both sides: failover swaps the roles): init, sync, expire,
failover, sync back, failback, takeover; receives with `-u` (only root may mount on Linux),
a readonly change of a mounted filesystem whose remount only root may do; a missing
permission is an error that names it and the `zfs allow` line that grants it.

`pair` runs on the stand-in (whose delegation model is held to OpenZFS by
tests/contract/test_delegation.py) and, with `--zfs=standin,real`, on OpenZFS 2.1 and 2.3."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from tests.coexist.conftest import HOLD, Pair
from tests.harness.backend_transport import BackendTransport
from tests.harness.zfs_backend import (
    UNPRIVILEGED,
    StandinBackend,
    ZfsBackend,
    ZfsResult,
    get,
    ok,
    snapshots,
)
from workers.engine import Context, EngineConfig, roles, run
from workers.engine.delegation import RECEIVE_SIDE, SEND_SIDE
from workers.engine.errors import ZrepqError
from workers.engine.events import Message
from workers.engine.requests import (
    ExpireRequest,
    FailoverRequest,
    InitRequest,
    SyncRequest,
    TakeoverRequest,
)

pytestmark = pytest.mark.unprivileged


class AsUser:
    """A `ZfsBackend` whose every command runs as `user` (the worker's dedicated user)."""

    def __init__(self, inner: ZfsBackend, user: str) -> None:
        self.inner, self.user = inner, user
        self.name, self.pool, self.pool2 = inner.name, inner.pool, inner.pool2
        self.base, self.base2 = inner.base, inner.base2

    def zfs(self, *args: str, input: bytes | None = None, user: str | None = None) -> ZfsResult:
        return self.inner.zfs(*args, input=input, user=self.user)

    def zpool(self, *args: str) -> ZfsResult:
        return self.inner.zpool(*args)

    def sh(self, script: str, input: bytes | None = None, user: str | None = None) -> ZfsResult:
        return self.inner.sh(script, input=input, user=self.user)


class UserPeer:
    """The other side of failover/takeover: that host's engine, as the same user."""

    def __init__(self, p: Pair) -> None:
        self.p = p

    def takeover_local(
        self, host: str, fs: str, *, tag: str, snap: str | None = None
    ) -> Sequence[Message]:
        roles.takeover(as_worker(self.p, host), TakeoverRequest(fs=fs, local_only=True))
        return []

    def failover(self, host: str, fs: str, *, tag: str) -> Sequence[Message]:
        roles.failover(as_worker(self.p, host), FailoverRequest(fs=fs))
        return []


def as_worker(p: Pair, host: str = "hosta") -> Context:
    """zrepq's engine on `host`, every zfs command run as UNPRIVILEGED."""
    transport = BackendTransport(AsUser(p.b, UNPRIVILEGED), host, ["hosta", "hostb"])
    env = {"ZREPQ_RECV_UNMOUNTED": "yes"}
    if "ZREP_RUNDIR" in os.environ:
        env["ZREP_RUNDIR"] = os.environ["ZREP_RUNDIR"]
    config = EngineConfig.from_env(env)
    return Context(transport, config, observer=p.events.append, peer=UserPeer(p))


def grant_both_lines_on_both_sides(p: Pair) -> None:
    """The two lines of docs/operations.md, for this test's user, as root: a pair that fails
    over needs both on both sides."""
    both = ",".join(dict.fromkeys(SEND_SIDE + RECEIVE_SIDE))
    ok(p.b, "allow", "-u", UNPRIVILEGED, both, p.b.base)
    ok(p.b, "allow", "-u", UNPRIVILEGED, both, p.b.base2)


def roles_now(p: Pair) -> tuple[str, str, str, str]:
    """(zrep:master, readonly) of the source, then of the destination."""
    return (get(p.b, "zrep:master", p.src), get(p.b, "readonly", p.src),
            get(p.b, "zrep:master", p.dst), get(p.b, "readonly", p.dst))  # fmt: skip


def test_the_whole_cycle_as_a_dedicated_user_with_zfs_allow(pair: Pair) -> None:
    """init, sync, expire, failover, sync back, expire, failback, takeover, sync: every zfs
    command as `nobody`, allowed the documented lines."""
    p = pair
    grant_both_lines_on_both_sides(p)
    p.write("data.txt", b"v1\n")
    a, b = as_worker(p, "hosta"), as_worker(p, "hostb")
    run(a, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    assert get(p.b, "zrep:master", p.src) == "yes"
    for n in range(1, 4):
        p.write("data.txt", f"v{n + 1}\n".encode())
        res = run(a, SyncRequest(fs=p.src))
        assert res.status == "synced" and res.snapshot == f"{p.src}@zrep_{n:06x}"
    assert get(p.b, "mounted", p.dst) == "no"  # received with -u: only root mounts
    assert snapshots(p.b, p.dst)[-1] == "zrep_000003"
    assert HOLD in ok(p.b, "holds", "-H", f"{p.dst}@zrep_000003")
    assert ok(p.b, "list", "-H", "-t", "bookmark", "-o", "name", p.src).split() == [
        f"{p.src}#zrepq_zrep_000003"
    ]
    ok(p.b, "set", "zrep:savecount=2", p.src)
    ok(p.b, "set", "zrep:savecount=2", p.dst)
    exp = run(a, ExpireRequest(fs=p.src))
    assert exp.destroyed and exp.remote_destroyed
    assert snapshots(p.b, p.src) == ["zrep_000002", "zrep_000003"]

    # failover: the master (mounted: created by root) goes readonly, a last sync, roles swap
    p.events.clear()
    role = run(a, FailoverRequest(fs=p.src))
    assert (role.role, role.synced) == ("standby", f"{p.src}@zrep_000004")
    assert roles_now(p) == ("-", "on", "yes", "off")
    assert any("its remount is root's" in w for w in p.warnings())  # readonly, not remounted
    mount = [w for w in p.warnings() if f"could not mount {p.dst}" in w]  # takeover: root's
    assert mount and "only root mounts on Linux" in mount[0] and "lacks" not in mount[0]
    assert get(p.b, "mounted", p.src) == "yes"
    if not isinstance(p.b, StandinBackend):
        # the kernel applied readonly to the mount itself, remount or not (seen on OpenZFS
        # 2.1.11 and 2.3.2); the stand-in's mounts are plain directories that cannot
        res = p.b.sh(f"touch {get(p.b, 'mountpoint', p.src)}/after-failover")
        assert res.returncode != 0 and "Read-only file system" in res.stderr, res
    # the new master syncs back into the old one (mounted, readonly): recv -u, incremental
    ok(p.b, "mount", p.dst)  # root mounts the new master, as zfs-mount.service would
    write_as_root(p, p.dst, b"from hostb\n")
    res = run(b, SyncRequest(fs=p.dst))
    assert res.status == "synced" and res.snapshot == f"{p.dst}@zrep_000005"
    assert snapshots(p.b, p.src)[-1] == "zrep_000005"
    run(b, ExpireRequest(fs=p.dst))  # each sync expired already: savecount 2 on both sides
    assert snapshots(p.b, p.dst) == snapshots(p.b, p.src) == ["zrep_000004", "zrep_000005"]
    # failback, run on the master (hostb), then a takeover run on the standby (hostb again)
    role = run(b, FailoverRequest(fs=p.dst))
    assert (role.role, role.synced) == ("standby", f"{p.dst}@zrep_000006")
    assert roles_now(p) == ("yes", "off", "-", "on")
    res = run(a, SyncRequest(fs=p.src))
    assert res.status == "synced" and res.snapshot == f"{p.src}@zrep_000007"
    role = run(b, TakeoverRequest(fs=p.dst))
    assert role.role == "master"
    assert roles_now(p) == ("-", "on", "yes", "off")
    res = run(b, SyncRequest(fs=p.dst))
    assert res.status == "synced" and res.snapshot == f"{p.dst}@zrep_000009"
    assert snapshots(p.b, p.src)[-1] == "zrep_000009"
    assert ok(p.b, "list", "-H", "-t", "bookmark", "-o", "name", p.dst).split() == [
        f"{p.dst}#zrepq_zrep_000009"
    ]


def write_as_root(p: Pair, fs: str, data: bytes) -> None:
    mountpoint = get(p.b, "mountpoint", fs)
    p.b.sh(f"cat > {mountpoint}/data.txt", input=data).check()


@pytest.mark.parametrize("perm", ["snapshot", "hold", "send", "receive"])
def test_a_missing_permission_names_itself_and_its_zfs_allow_line(pair: Pair, perm: str) -> None:
    """One permission taken away: the sync fails with an error that names it and the line
    that grants it (`hold`: the send itself, -I takes temporary holds)."""
    p = pair
    grant_both_lines_on_both_sides(p)
    a = as_worker(p)
    run(a, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    run(a, SyncRequest(fs=p.src))
    where = p.b.base2 if perm == "receive" else p.b.base
    ok(p.b, "unallow", "-u", UNPRIVILEGED, perm, where)
    p.write("data.txt", b"v5\n")
    with pytest.raises(ZrepqError) as e:
        run(a, SyncRequest(fs=p.src))
    msg = str(e.value)
    assert "permission denied" in msg
    # the kernel checks receive, create and mount for every receive: all three are named
    perms = ("receive", "create", "mount") if perm == "receive" else (perm,)
    assert f"lacks the zfs permission {'/'.join(perms)} on " in msg
    fs = p.dst if perm == "receive" else p.src
    assert f"zfs allow -u zrepq {','.join(perms)} {fs}" in msg
    assert snapshots(p.b, p.dst)[-1] == "zrep_000001"
