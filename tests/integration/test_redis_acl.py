"""deploy/redis-acl.conf in a real redis-server: what each role's user may do with zrepq's
own keys (docs/reliability.md, "Least-privilege Redis").

What this proves: the key patterns and command categories of each user, command by command,
against Redis 7's ACL. What it does not (yet): a whole fleet (Celery workers, beat, Flower)
running under these users; and a worker's user can still write every host's lease and the
one registry hash (the documented gap).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.api import Producer
from producer.watch import wait
from tasks.app import make_app
from tests.harness.fleet import Fleet
from tests.harness.netutil import REPO, free_port, spawn_logged, wait_until
from tests.harness.ops import SCRIPTS, ConfiguredRedis, base_env, start_scheduler, zrepq
from tests.harness.services import Service, start_flower, start_workers, stop_all, worker_env
from tests.harness.signing import signed
from tests.harness.sshd import SshdCluster
from tests.harness.standin import standin_env

ACL = REPO / "deploy" / "redis-acl.conf"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredRedis]:
    lines = [ln for ln in ACL.read_text().splitlines() if ln.startswith("user ")]
    srv = ConfiguredRedis(tmp_path_factory.mktemp("acl"), lines)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def client(srv: ConfiguredRedis, role: str) -> redis.Redis:
    return redis.Redis(port=srv.port, username=f"zrepq-{role}", password=f"PASSWORD-{role}")


def allowed(fn: object, *args: object) -> bool:
    try:
        fn(*args)  # type: ignore[operator]
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
    # The gap (docs/reliability.md): leases of both sides of a sync, and the one registry hash.
    assert allowed(w.set, "zrepq:lock:zrep:hostb:pool/fs", "token")
    assert allowed(w.hset, "zrepq:hosts", "hostb", "{}")


def test_producers_scheduler_flower_and_metrics_cannot_touch_leases_or_the_registry(
    server: ConfiguredRedis,
) -> None:
    admin_view = client(server, "flower")
    for role in ("producer", "scheduler", "flower", "metrics"):
        c = client(server, role)
        assert not allowed(c.set, "zrepq:lock:zrep:hosta:pool/fs", "x"), role
        assert not allowed(c.hset, "zrepq:hosts", "hosta", "{}"), role
        assert not allowed(c.set, "zrepq:seen:hosta:t:0", "done"), role
        assert not allowed(c.execute_command, "FLUSHALL"), role
        assert allowed(c.hgetall, "zrepq:hosts"), role
    m = client(server, "metrics")
    assert allowed(m.hgetall, "zrepq:syncs") and not allowed(m.hset, "zrepq:syncs", "f", "x")
    p = client(server, "producer")
    assert allowed(p.set, "zrepq:beat:nightly", "x")  # zrepq schedule add
    assert allowed(p.lpush, "zrepq.host.hosta", "a signed task")
    assert allowed(admin_view.get, "zrepq:lock:zrep:hosta:pool/fs")


def test_the_acl_file_names_every_role() -> None:
    users = {ln.split()[1] for ln in ACL.read_text().splitlines() if ln.startswith("user ")}
    assert {"zrepq-worker-hosta", "zrepq-producer", "zrepq-scheduler", "zrepq-flower",
            "zrepq-metrics", "default"} == users  # fmt: skip


def test_a_password_is_needed(server: ConfiguredRedis, tmp_path: Path) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port, username="zrepq-producer", password="wrong").ping()


# ---- a fleet under these users -------------------------------------------------------------

HOSTS = ("aa", "ab")


def acl_lines() -> list[str]:
    """The file's users, the worker's line made once per test host, plus an admin (ACL LOG)."""
    out = ["user zrepq-admin on >PASSWORD-admin ~* &* +@all"]
    for line in ACL.read_text().splitlines():
        if not line.startswith("user "):
            continue
        if "worker-hosta" in line:
            out += [line.replace("hosta", h) for h in HOSTS]
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
        denied = admin.execute_command("ACL", "LOG")
        assert denied == [], [(d[b"username"], d[b"context"], d[b"object"]) for d in denied]
    finally:
        stop_all(started)
        srv.stop()
