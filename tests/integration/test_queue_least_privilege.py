"""Least privilege through the queue (issue 15, point 3): the master's Celery worker runs as
a dedicated user that is not root (`nobody`, started under `setpriv`), allowed what
docs/operations.md grants with `zfs allow`; init, sync, expire and failover are enqueued by
the producer and succeed, and a permission taken away fails the queued sync with a task
error record that names it and its `zfs allow` line.

The real parts of tests/integration/test_queue.py: redis-server, `zrepq-worker` processes,
sshd, the stand-in zfs (whose delegation model checks the calling uid, held to OpenZFS by
tests/contract/test_delegation.py). The master, lpa, has its stand-in state in a directory
`nobody` can reach (standin_fixtures.shared_root); its worker gets its own copies of the ssh
key, known_hosts, signing keys and run/lock directories, owned by `nobody`, mode 0600/0700.
The standby, lpb, is reached over ssh as root (the harness's sshd logs every client in as
root) and its worker (the failover's other half) runs as root: only the master's side is
unprivileged here; tests/coexist/test_least_privilege.py runs both sides as `nobody`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.api import Producer
from producer.watch import wait
from tasks.app import make_app
from tests.harness.redis_server import RedisServer
from tests.harness.services import Service, start_workers, stop_all, worker_env
from tests.harness.signing import key_dir, signed
from tests.harness.sshd import SshdCluster
from tests.harness.standin import StandinHost, standin_env, wipe_root
from tests.harness.standin_fixtures import share, shared_root
from tests.harness.zfs_backend import UNPRIVILEGED, UNPRIVILEGED_GROUP
from workers.engine.delegation import RECEIVE_SIDE, SEND_SIDE

pytestmark = pytest.mark.unprivileged

A, B = "lpa", "lpb"
SRC, DST = "poollpa/prod", "poollpb/prod"


def done(r: Any, timeout: float = 120) -> dict[str, Any]:
    return wait({"t": r}, timeout=timeout, show=False)["t"]


SETPRIV = ("setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED_GROUP}",
           "--clear-groups", "--")  # fmt: skip


def user_prefix() -> tuple[str, ...]:
    """What the worker runs inside: `setpriv` to `nobody`, and before it, if `nobody` may not
    run this interpreter (here a pyenv under /root, 0700), a mount namespace of its own in
    which that directory is a tmpfs showing the interpreter's installation alone, so that the
    worker runs (and Celery re-executes) this very interpreter with this venv's packages."""
    if subprocess.run([*SETPRIV, "test", "-x", sys.executable], check=False).returncode == 0:
        return SETPRIV
    base = Path(sys.base_prefix).resolve()
    closed = next((d for d in reversed(base.parents) if not d.stat().st_mode & 0o001), None)
    if closed is None or closed == Path("/"):
        pytest.skip(f"{UNPRIVILEGED} cannot run {sys.executable}")
    script = (
        'set -e; keep=$(mktemp -d); mount --bind "$1" "$keep"; '
        'mount -t tmpfs -o mode=0755 zrepq-test "$2"; mkdir -p "$1"; '
        'mount --bind "$keep" "$1"; umount "$keep"; rmdir "$keep"; shift 2; exec "$@"'
    )
    return ("unshare", "--mount", "sh", "-c", script, "sh", str(base), str(closed), *SETPRIV)


def own(path: Path, mode: int) -> None:
    user = pwd.getpwnam(UNPRIVILEGED)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def user_files(cluster: SshdCluster, home: Path) -> dict[str, str]:
    """What the worker's user reads and writes, in `home` (its own, 0700): the ssh client's
    key, known_hosts and config (ssh refuses a key others may read), the signing keys (the
    harness's are root's), zrep's run directory and zrepq's lock directory."""
    own(home, 0o700)
    ssh = home / "ssh"
    ssh.mkdir()
    own(ssh, 0o700)
    key, known = ssh / "id_ed25519", ssh / "known_hosts"
    shutil.copy(cluster.identity_file, key)
    shutil.copy(cluster.known_hosts, known)
    config = cluster.config_file.read_text()
    config = config.replace(str(cluster.identity_file), str(key))
    config = config.replace(str(cluster.known_hosts), str(known))
    (ssh / "config").write_text(config)
    for path in (key, known, ssh / "config"):
        own(path, 0o600)
    keys = home / "keys"
    shutil.copytree(key_dir(), keys)
    for dirpath, _dirs, files in os.walk(keys):
        own(Path(dirpath), 0o700)
        for name in files:
            own(Path(dirpath) / name, 0o600)
    for name in ("run", "locks"):
        (home / name).mkdir()
        own(home / name, 0o700)
    return {
        "HOME": str(home),
        "ZREPQ_SSH_CONFIG": str(ssh / "config"),
        "ZREPQ_SIGNING_KEY": str(keys / "tester.key"),
        "ZREPQ_SIGNING_TRUSTED": str(keys / "trusted"),
        "ZREPQ_POLICY": str(keys / "policy.toml"),
        "ZREP_RUNDIR": str(home / "run"),
        "ZREPQ_LOCK_DIR": str(home / "locks"),
    }


@pytest.fixture
def lp(
    request: pytest.FixtureRequest,
    sshd_cluster: SshdCluster,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[tuple[StandinHost, StandinHost, Producer, dict[str, Service]]]:
    """lpa (worker as `nobody`, its pool granted both lines of docs/operations.md) and lpb
    (worker as root), each behind its sshd, a producer on the test Redis."""
    root_a = shared_root(request)
    root_a.mkdir()
    sshd_cluster.host(A, env={"ZFS_STANDIN_ROOT": str(root_a)})
    sshd_b = sshd_cluster.host(B)
    wipe_root(sshd_b.root)
    a, b = StandinHost(root_a, A), StandinHost(sshd_b.root, B)
    a.create_pool("poollpa")
    b.create_pool("poollpb")
    a.zfs("create", SRC)
    a.write(SRC, "data.txt", b"v0\n")
    share(root_a)  # what root and `nobody` create in it from now on stays usable by both
    both = ",".join(dict.fromkeys(SEND_SIDE + RECEIVE_SIDE))
    a.zfs("allow", "-u", UNPRIVILEGED, both, "poollpa")

    home = root_a.parent / "home"  # beside the shared root: removed with it
    home.mkdir()
    env_a = worker_env(A, redis_server.url, standin_env(root_a), None)
    env_a.update(user_files(sshd_cluster, home))
    env_b = worker_env(B, redis_server.url, standin_env(sshd_b.root), str(sshd_cluster.config_file))
    services = start_workers({A: env_a, B: env_b}, tmp_path, prefixes={A: user_prefix()})
    try:
        producer = Producer(app=make_app(signed({"ZREPQ_BROKER_URL": redis_server.url})))
        yield a, b, producer, services
    finally:
        stop_all(services)


def test_init_sync_expire_failover_through_the_queue_with_the_master_worker_as_nobody(
    lp: tuple[StandinHost, StandinHost, Producer, dict[str, Service]],
) -> None:
    """init, 3 syncs, expire, a sync without `hold` (fails, names it), sync, failover."""
    a, b, p, services = lp
    worker_uid = int(
        Path(f"/proc/{services[A].pid}/status").read_text().split("Uid:")[1].split()[0]
    )
    assert worker_uid == pwd.getpwnam(UNPRIVILEGED).pw_uid

    rec = done(p.init(SRC, B, DST, host=A))
    assert rec["ok"], rec
    for n in range(1, 4):
        a.write(SRC, "data.txt", f"v{n}\n".encode())
        rec = done(p.sync(f"{A}:{SRC}"))
        assert rec["ok"] and rec["result"]["status"] == "synced", rec
        assert rec["result"]["snapshot"] == f"{SRC}@zrep_{n:06x}"
    assert b.read(DST, "data.txt") == b"v3\n"
    assert b.get("mounted", DST) == "no"  # received with -u: the worker is not root
    # The worker's zfs commands run as its uid: the stand-in grants them through `zfs allow`
    # alone, as the kernel does (the denial below would not happen to root).

    a.zfs("set", "zrep:savecount=2", SRC)
    b.zfs("set", "zrep:savecount=2", DST)
    rec = done(p.expire(SRC, host=A))
    assert rec["ok"], rec
    assert [s.split("@")[1] for s in a.snapshots(SRC)] == ["zrep_000002", "zrep_000003"]
    assert [s.split("@")[1] for s in b.snapshots(DST)] == ["zrep_000002", "zrep_000003"]

    # One permission taken away: the queued sync fails, its record names it and the grant.
    a.zfs("unallow", "-u", UNPRIVILEGED, "hold", "poollpa")
    a.write(SRC, "data.txt", b"v4\n")
    rec = done(p.sync(f"{A}:{SRC}"))
    assert rec["ok"] is False, rec
    msg = rec["error"]["message"]
    assert "permission denied" in msg and rec["error"]["host"] == A, rec
    assert f"lacks the zfs permission hold on {SRC}" in msg, msg
    assert f"zfs allow -u zrepq hold {SRC}" in msg, msg
    assert b.snapshots(DST)[-1] == f"{DST}@zrep_000003"  # nothing reached the standby

    # Granted back: the next sync goes through, then a failover (lpa's half as nobody:
    # readonly, a last sync; lpb's half, its takeover, through lpb's queue).
    a.zfs("allow", "-u", UNPRIVILEGED, "hold", "poollpa")
    rec = done(p.sync(f"{A}:{SRC}"))
    assert rec["ok"] and rec["result"]["snapshot"] == f"{SRC}@zrep_000005", rec
    rec = done(p.failover(SRC, host=A))
    assert rec["ok"], rec
    sides = [(s["host"], s["role"], s["synced"]) for s in rec["result"]["sides"]]
    assert sides == [(A, "standby", f"{SRC}@zrep_000006"), (B, "master", None)], rec
    assert (a.get("zrep:master", SRC), a.get("readonly", SRC)) == ("-", "on")
    assert (b.get("zrep:master", DST), b.get("readonly", DST)) == ("yes", "off")
    assert b.read(DST, "data.txt") == b"v4\n"
