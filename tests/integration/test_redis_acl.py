"""deploy/redis-acl.conf in a real redis-server: what each role's user may do with zrepq's
own keys (docs/reliability.md, "Least-privilege Redis").

What this proves: the key patterns and command categories of each user, command by command,
against Redis 7's ACL. What it does not (yet): a whole fleet (Celery workers, beat, Flower)
running under these users; and a worker's user can still write every host's lease and the
one registry hash (the documented gap).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.harness.netutil import REPO
from tests.harness.ops import ConfiguredRedis

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
