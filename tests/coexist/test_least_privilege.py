"""Least privilege (issue 15, point 3): zrepq's engine with every zfs command run as a user
that is not root (`nobody`), allowed what `docs/operations.md` grants with one `zfs allow`
line per side: init, sync, expire; receives with `-u` (only root may mount on Linux); a
missing permission is an error that names it and the `zfs allow` line that grants it.

`pair` runs on the stand-in (whose delegation model is held to OpenZFS by
tests/contract/test_delegation.py) and, with `--zfs=standin,real`, on OpenZFS 2.1 and 2.3."""

from __future__ import annotations

import os

import pytest

from tests.coexist.conftest import HOLD, Pair
from tests.harness.backend_transport import BackendTransport
from tests.harness.zfs_backend import UNPRIVILEGED, ZfsBackend, ZfsResult, get, ok, snapshots
from workers.engine import Context, EngineConfig, run
from workers.engine.delegation import RECEIVE_SIDE, SEND_SIDE
from workers.engine.errors import PermissionDenied
from workers.engine.requests import ExpireRequest, InitRequest, SyncRequest

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


def unprivileged_context(p: Pair) -> Context:
    transport = BackendTransport(AsUser(p.b, UNPRIVILEGED), "hosta", ["hosta", "hostb"])
    env = {"ZREPQ_RECV_UNMOUNTED": "yes"}
    if "ZREP_RUNDIR" in os.environ:
        env["ZREP_RUNDIR"] = os.environ["ZREP_RUNDIR"]
    return Context(transport, EngineConfig.from_env(env), observer=p.events.append)


def test_the_worker_as_a_dedicated_user_with_one_zfs_allow_line_per_side(pair: Pair) -> None:
    p = pair
    # the two lines of docs/operations.md, for this test's user, as root
    ok(p.b, "allow", "-u", UNPRIVILEGED, ",".join(SEND_SIDE), p.b.base)
    ok(p.b, "allow", "-u", UNPRIVILEGED, ",".join(RECEIVE_SIDE), p.b.base2)
    p.write("data.txt", b"v1\n")
    ctx = unprivileged_context(p)
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    assert get(p.b, "zrep:master", p.src) == "yes"
    for n in range(1, 4):
        p.write("data.txt", f"v{n + 1}\n".encode())
        res = run(ctx, SyncRequest(fs=p.src))
        assert res.status == "synced" and res.snapshot == f"{p.src}@zrep_{n:06x}"
    assert get(p.b, "mounted", p.dst) == "no"  # received with -u: only root mounts
    assert snapshots(p.b, p.dst)[-1] == "zrep_000003"
    assert HOLD in ok(p.b, "holds", "-H", f"{p.dst}@zrep_000003")
    assert ok(p.b, "list", "-H", "-t", "bookmark", "-o", "name", p.src).split() == [
        f"{p.src}#zrepq_zrep_000003"
    ]
    ok(p.b, "set", "zrep:savecount=2", p.src)
    ok(p.b, "set", "zrep:savecount=2", p.dst)
    exp = run(ctx, ExpireRequest(fs=p.src))
    assert exp.destroyed and exp.remote_destroyed
    assert snapshots(p.b, p.src) == ["zrep_000002", "zrep_000003"]
    # a permission taken away: the error names it and the line that grants it
    # (not `hold`: OpenZFS's `zfs send -I` takes temporary holds, so the send itself needs it)
    ok(p.b, "unallow", "-u", UNPRIVILEGED, "snapshot", p.b.base)
    p.write("data.txt", b"v5\n")
    with pytest.raises(PermissionDenied) as e:
        run(ctx, SyncRequest(fs=p.src))
    msg = str(e.value)
    assert "permission denied" in msg
    assert "lacks the zfs permission snapshot" in msg
    assert f"zfs allow -u zrepq snapshot {p.src}" in msg
