"""deploy/redis-acl.conf in a real redis-server: what each role's user may do with zrepq's
own keys (docs/reliability.md, "Least-privilege Redis").

What this proves: the key patterns and command categories of each user, command by command,
against Redis 7's ACL; that a worker's user writes its own host's leases, registry entry and
sync records and no other host's (also not from inside a Lua script); that the two sides of a
pair exclude each other although each worker only reads the other's lease; and a whole fleet
(Celery workers, beat, Flower, the exporter) running under these users.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.api import Producer
from producer.watch import wait
from tasks.app import make_app
from tasks.registry import read_sync_records, registered
from tests.harness.fleet import Fleet
from tests.harness.netutil import REPO, free_port, spawn_logged, wait_until
from tests.harness.ops import SCRIPTS, ConfiguredRedis, base_env, start_scheduler, zrepq
from tests.harness.services import Service, start_flower, start_workers, stop_all, worker_env
from tests.harness.signing import signed
from tests.harness.sshd import SshdCluster
from tests.harness.standin import standin_env
from workers.engine import run
from workers.engine.errors import LockHeld
from workers.engine.requests import (
    ClearRequest,
    ExpireRequest,
    FailoverRequest,
    InitRequest,
    SyncRequest,
    TakeoverRequest,
)
from workers.keys import host_key, lock_key, syncs_key
from workers.lease import RedisLocks

ACL = REPO / "deploy" / "redis-acl.conf"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredRedis]:
    """The file's users, the worker's line also made for hostb and hostab."""
    srv = ConfiguredRedis(tmp_path_factory.mktemp("acl"), acl_lines(("hosta", "hostb", "hostab")))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def client(srv: ConfiguredRedis, role: str) -> redis.Redis:
    return redis.Redis(port=srv.port, username=f"zrepq-{role}", password=f"PASSWORD-{role}")


def allowed(fn: object, *args: object, **kwargs: object) -> bool:
    try:
        fn(*args, **kwargs)  # type: ignore[operator]
    except redis.exceptions.NoPermissionError:
        return False
    return True


def test_the_default_user_is_off(server: ConfiguredRedis) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port).ping()


def test_a_workers_user_writes_its_own_replay_keys_and_no_other_hosts(
    server: ConfiguredRedis,
) -> None:
    w = client(server, "worker-hosta")
    assert allowed(w.set, "zrepq:seen:hosta:t1:0", "run")
    assert not allowed(w.set, "zrepq:seen:hostb:t1:0", "done")  # another host's replay memory
    assert not allowed(w.set, "zrepq:beat:nightly", "x")  # the schedule
    assert allowed(w.lpush, "zrepq.host.hostb", "a hand-over")  # by design: signatures guard
    for cmd in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("ACL", "LIST"), ("KEYS", "*")):
        assert not allowed(w.execute_command, *cmd), cmd


def test_a_workers_user_writes_no_other_hosts_lease_registry_entry_or_sync_records(
    server: ConfiguredRedis,
) -> None:
    """The gap issue 16 left open, closed: hosta's credential writes only hosta's keys."""
    admin = client(server, "flower")  # reads everything of zrepq's
    w = client(server, "worker-hosta")
    b = client(server, "worker-hostb")  # the same line, made for hostb (`acl_lines`)
    theirs, mine = lock_key("zrep", "hostb", "pool/fs:x"), lock_key("zrep", "hosta", "pool/fs:x")
    assert allowed(b.set, theirs, "hostb's token", px=60_000)
    for write in (
        lambda: w.set(theirs, "stolen"),
        lambda: w.set(theirs, "stolen", nx=True),
        lambda: w.delete(theirs),
        lambda: w.expire(theirs, 1),
        lambda: w.pexpire(theirs, 1),
        lambda: w.persist(theirs),
        lambda: w.getdel(theirs),
        lambda: w.rename(theirs, mine),
        lambda: w.set(lock_key("zrep", "hostab", "pool/fs"), "a host whose name starts alike"),
        lambda: w.set(host_key("hostb"), "{}"),
        lambda: w.delete(host_key("hostb")),
        lambda: w.hset(syncs_key("hostb"), "zrep:hostb:pool/fs", "{}"),
        lambda: w.delete(syncs_key("hostb")),
        lambda: w.hset("zrepq:hosts", "hostb", "{}"),  # the old shared keys: no longer anyone's
        lambda: w.hset("zrepq:syncs", "zrep:hostb:pool/fs", "{}"),
    ):
        assert not allowed(write)
    assert admin.get(theirs) == b"hostb's token" and admin.pttl(theirs) > 50_000
    # Reading the partner's lease (its atomic check) and the registry is allowed.
    assert allowed(w.get, theirs) and allowed(w.get, host_key("hostb"))
    # Its own keys: all of it.
    assert allowed(w.set, mine, "t", px=60_000) and allowed(w.pexpire, mine, 60_000)
    assert allowed(w.delete, mine)
    assert allowed(w.set, host_key("hosta"), "{}") and allowed(w.exists, host_key("hosta"))
    assert allowed(w.hset, syncs_key("hosta"), "zrep:hosta:pool/fs", "{}")
    # Nor from inside a Lua script: Redis checks each command of a script against the user,
    # a key passed as an argument as well as one declared (which needs read *and* write).
    sneaky = w.register_script("return redis.call('set', ARGV[1], 'stolen')")
    with pytest.raises(redis.exceptions.ResponseError, match="can't access"):
        sneaky(args=[theirs], client=w)
    with pytest.raises(redis.exceptions.NoPermissionError):
        sneaky(keys=[theirs], args=[theirs], client=w)
    # The lease code itself: hosta may check hostb's lease, and cannot take it.
    locks = RedisLocks(w, owner="hosta")
    check = ["hostb:zrep:pool/fs:x"]
    with (
        pytest.raises(LockHeld, match="held by hostb's token"),
        locks.hold(["hosta:zrep:pool/fs:x"], operation="sync", check=check),
    ):
        pass
    assert admin.get(mine) is None  # nothing taken
    with (
        pytest.raises(redis.exceptions.NoPermissionError),
        locks.hold(["hostb:zrep:pool/fs:x"], operation="sync"),
    ):
        pass
    assert admin.get(theirs) == b"hostb's token"


def test_producers_scheduler_flower_and_metrics_cannot_touch_leases_or_the_registry(
    server: ConfiguredRedis,
) -> None:
    admin_view = client(server, "flower")
    client(server, "worker-hosta").set(host_key("hosta"), '{"queue": "zrepq.host.hosta"}')
    for role in ("producer", "scheduler", "flower", "metrics"):
        c = client(server, role)
        assert not allowed(c.set, lock_key("zrep", "hosta", "pool/fs"), "x"), role
        assert not allowed(c.set, host_key("hosta"), "{}"), role
        assert not allowed(c.set, "zrepq:seen:hosta:t:0", "done"), role
        assert not allowed(c.execute_command, "FLUSHALL"), role
        assert "hosta" in registered(c), role  # SCAN, then MGET of the hosts' keys
    m = client(server, "metrics")
    assert allowed(read_sync_records, m)
    assert not allowed(m.hset, syncs_key("hosta"), "f", "x")
    p = client(server, "producer")
    assert allowed(p.set, "zrepq:beat:nightly", "x")  # zrepq schedule add
    assert allowed(p.lpush, "zrepq.host.hosta", "a signed task")
    assert allowed(admin_view.get, lock_key("zrep", "hosta", "pool/fs"))


def test_the_acl_file_names_every_role() -> None:
    users = {ln.split()[1] for ln in ACL.read_text().splitlines() if ln.startswith("user ")}
    assert {"zrepq-worker-hosta", "zrepq-producer", "zrepq-scheduler", "zrepq-flower",
            "zrepq-metrics", "default"} == users  # fmt: skip


def test_a_password_is_needed(server: ConfiguredRedis, tmp_path: Path) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port, username="zrepq-producer", password="wrong").ping()


# ---- the two sides of a pair, each on its own user ------------------------------------------


def test_the_sides_of_a_pair_exclude_each_other_each_writing_only_its_own_lease(
    server: ConfiguredRedis, fleet: Callable[..., Fleet]
) -> None:
    """hosta's sync holds hosta's lease (a real, slow one); hostb's worker, on hostb's user,
    can take no lock on the target dataset meanwhile (takeover -L -F, expire, clear): it
    reads hosta's lease inside its atomic acquire. And the other way round: while hostb's
    worker holds its dataset's lease, hosta's sync and failover are refused. zrep's words,
    then the holder."""
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    src, dst = a.fs("prod"), b.fs("prod")
    a.zfs.zfs("create", src)
    run(f.context("hosta"), InitRequest(fs=src, dest_host="hostb", dest_fs=dst))
    admin = client(server, "flower")
    la = RedisLocks(client(server, "worker-hosta"), owner="hosta")
    lb = RedisLocks(client(server, "worker-hostb"), owner="hostb")
    # 1. hosta syncs (8 MB at 1 MB/s): hostb's takeover -L -F and expire are refused.
    a.zfs.write(src, "big.bin", os.urandom(8_000_000))
    ctx_a = f.context("hosta", {"ZREP_INFILTER": "pv -q -L 1m"}, locks=la, operation_id="T1")
    done: list[object] = []
    syncing = threading.Thread(target=lambda: done.append(run(ctx_a, SyncRequest(fs=src))))
    syncing.start()
    try:
        assert wait_until(lambda: admin.exists(lock_key("zrep", "hosta", src)), 10, 0.05)
        ctx_b = f.context("hostb", locks=lb, operation_id="T2")
        for req in (
            TakeoverRequest(fs=dst, local_only=True, force=True),
            ExpireRequest(fs=dst, local_only=True),
            ClearRequest(fs=dst),
        ):
            with pytest.raises(LockHeld) as refused:
                run(ctx_b, req)
            text = str(refused.value)
            assert text.startswith(f"Cannot lock {dst}. Cannot continue\n"), text
            assert f"lease hosta:zrep:{src} is held by pid {os.getpid()} on hosta (sync/T1)" in text
        assert admin.get(lock_key("zrep", "hostb", dst)) is None  # hostb took nothing
        assert b.zfs.get("zrep:master", dst) == "-"  # still the standby
    finally:
        syncing.join(60)
    assert len(done) == 1 and getattr(done[0], "status", None) == "synced", done
    # 2. hostb's worker holds its dataset's lease: hosta's sync and failover are refused.
    ctx_a = f.context("hosta", locks=la, operation_id="T3")
    with lb.hold([f"hostb:zrep:{dst}"], operation="expire/T4"):
        for areq in (SyncRequest(fs=src), FailoverRequest(fs=src, local_only=True)):
            with pytest.raises(LockHeld) as refused:
                run(ctx_a, areq)
            text = str(refused.value)
            assert text.startswith(f"Cannot lock {src}. Cannot continue\n"), text
            assert (
                f"lease hostb:zrep:{dst} is held by pid {os.getpid()} on hostb (expire/T4)" in text
            )
        assert admin.get(lock_key("zrep", "hosta", src)) is None  # given back, nothing kept
    assert a.zfs.get("zrep:master", src) == "yes"
    # Free again: both work, each on its own user (the failover checks hostb's lease).
    assert run(ctx_a, SyncRequest(fs=src)).status == "synced"
    assert run(ctx_a, FailoverRequest(fs=src, local_only=True)).role == "standby"


def test_racing_sides_never_both_hold_a_pair(server: ConfiguredRedis) -> None:
    """Many rounds of both workers trying at the same instant, each taking its own lease
    and checking the other's: never both inside at once (one script runs after the other)."""
    la = RedisLocks(client(server, "worker-hosta"), owner="hosta")
    lb = RedisLocks(client(server, "worker-hostb"), owner="hostb")
    mine, theirs = "hosta:zrep:pool/race", "hostb:zrep:pool/race"
    sides = ((la, [mine], [theirs], "sync"), (lb, [theirs], [mine], "takeover"))
    for rnd in range(20):
        go = threading.Barrier(2)
        inside = threading.Barrier(2, timeout=0.3)  # passed only if both are inside at once
        got: list[str] = []
        threads = [
            threading.Thread(target=_race_side, args=(go, inside, got, *side)) for side in sides
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(got) >= 1, f"round {rnd}: one side must win"
        assert inside.broken, f"round {rnd}: both held the pair at once: {got}"


def _race_side(
    go: threading.Barrier,
    inside: threading.Barrier,
    got: list[str],
    locks: RedisLocks,
    keys: list[str],
    check: list[str],
    op: str,
) -> None:
    go.wait()
    try:
        with locks.hold(keys, operation=op, check=check):
            got.append(op)
            with contextlib.suppress(threading.BrokenBarrierError):
                inside.wait()
    except LockHeld:
        pass


# ---- a fleet under these users -------------------------------------------------------------

HOSTS = ("aa", "ab")


def acl_lines(hosts: tuple[str, ...] = HOSTS) -> list[str]:
    """The file's users, the worker's line made once per test host, plus an admin (ACL LOG)."""
    out = ["user zrepq-admin on >PASSWORD-admin ~* &* +@all"]
    for line in ACL.read_text().splitlines():
        if not line.startswith("user "):
            continue
        if "worker-hosta" in line:
            out += [line.replace("hosta", h) for h in hosts]
        else:
            out.append(line)
    return out


def url(srv: ConfiguredRedis, role: str) -> str:
    return f"redis://zrepq-{role}:PASSWORD-{role}@127.0.0.1:{srv.port}/0"


def test_a_fleet_runs_under_the_role_users_and_nothing_is_denied(
    sshd_cluster: SshdCluster, fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    """Two workers (each its own user), a producer and the scheduler on their users: init,
    sync, sync all (a chord), failover and takeover back (hand-overs between the hosts), a
    scheduled sync; Redis's ACL LOG stays empty."""
    srv = ConfiguredRedis(tmp_path / "redis", acl_lines())
    srv.start()
    started: dict[str, Service] = {}
    try:
        admin = redis.Redis(port=srv.port, username="zrepq-admin", password="PASSWORD-admin")
        f = fleet(*HOSTS)
        envs = {
            h: worker_env(
                h,
                url(srv, f"worker-{h}"),
                standin_env(sshd_cluster.host(h).root),
                str(sshd_cluster.config_file),
                ZREPQ_CONFIG="none",
            )
            for h in HOSTS
        }
        started.update(start_workers(envs, tmp_path))
        p = Producer(app=make_app(signed({"ZREPQ_CONFIG": "none",
                                          "ZREPQ_BROKER_URL": url(srv, "producer")})))  # fmt: skip
        a, b = f["aa"], f["ab"]
        a.zfs.zfs("create", a.fs("prod"))
        a.zfs.write(a.fs("prod"), "data.txt", b"v1\n")

        def done(r: Any) -> dict[str, Any]:
            return wait({"t": r}, timeout=120, show=False)["t"]

        assert done(p.init(a.fs("prod"), "ab", b.fs("prod"), host="aa"))["ok"]
        a.zfs.write(a.fs("prod"), "data.txt", b"v2\n")
        assert done(p.sync(a.fs("prod"), host="aa"))["ok"]
        recs = wait(p.sync_all(["aa"]), timeout=120, show=False)
        assert recs["aa"]["ok"], recs
        assert done(p.failover(a.fs("prod"), host="aa"))["ok"]
        assert done(p.takeover(a.fs("prod"), host="aa"))["ok"]
        assert b.zfs.read(b.fs("prod"), "data.txt") == b"v2\n"
        # The scheduler on its user fires a sync.
        env = base_env(ZREPQ_BROKER_URL=url(srv, "scheduler"), ZREPQ_BEAT_MAX_INTERVAL="1")
        started["scheduler"] = start_scheduler(env, tmp_path)
        a.zfs.write(a.fs("prod"), "data.txt", b"v3\n")
        penv = base_env(ZREPQ_BROKER_URL=url(srv, "producer"))
        res = zrepq(penv, "schedule", "add", "s", "sync", f"aa:{a.fs('prod')}", "--every", "1s")
        assert res.returncode == 0, res.stderr
        assert wait_until(lambda: b.zfs.read(b.fs("prod"), "data.txt") == b"v3\n", 60, 0.5)
        # Flower on its user: its workers page asks every worker (pidbox), its send-task signs.
        started["flower"] = flower = start_flower(url(srv, "flower"), tmp_path)
        api = f"http://127.0.0.1:{flower.port}/api"
        with urllib.request.urlopen(f"{api}/workers?refresh=1", timeout=30) as resp:
            assert {"zrepq@aa", "zrepq@ab"} <= set(json.loads(resp.read()))
        body = json.dumps({"kwargs": {"host": "aa", "fs": a.fs("prod")}, "queue": "zrepq.host.aa"})
        req = urllib.request.Request(
            f"{api}/task/send-task/zrep.lastsent",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            task_id = json.loads(resp.read())["task-id"]
        assert done(p.app.AsyncResult(task_id))["ok"]
        # The exporter on its user: Redis read, and its `zrep.status` polls of every host.
        mport = free_port()
        menv = base_env(ZREPQ_BROKER_URL=url(srv, "metrics"), ZREPQ_METRICS_STATUS_INTERVAL="1")
        mlog = tmp_path / "metrics.log"
        argv = [*SCRIPTS["zrepq"], "metrics", "--port", str(mport)]
        started["metrics"] = metrics = Service("metrics", spawn_logged(argv, menv, mlog), mlog)

        def scraped() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return False
            return "zrepq_exporter_redis_up 1.0" in text and "zrepq_status_poll_timestamp" in text

        assert wait_until(scraped, 60, 0.5), metrics.output()
        # Each worker wrote its own registry entry and sync records; the old shared keys
        # are not written any more.
        assert admin.exists(host_key("aa"), host_key("ab")) == 2
        assert admin.hlen(syncs_key("aa")) >= 1
        assert not admin.exists("zrepq:hosts", "zrepq:syncs")
        denied = admin.execute_command("ACL", "LOG")
        assert denied == [], [(d[b"username"], d[b"context"], d[b"object"]) for d in denied]
    finally:
        stop_all(started)
        srv.stop()
