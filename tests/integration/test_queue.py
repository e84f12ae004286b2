"""The distributed layer with real processes: redis-server, a Celery worker per host, Flower.

Hosts qa and qb each run `zrepq-worker` (a real Celery worker) over their own stand-in zfs
state, reachable from each other through real sshd. The producer enqueues by task name.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.api import Producer
from producer.fleet import records as fleet_records
from producer.render import handback_text
from producer.watch import outcome, wait
from tasks import contract as c
from tasks.app import make_app
from tasks.errors import TaskFailed
from tests.harness.fleet import Fleet, Site
from tests.harness.netutil import REPO, wait_until
from tests.harness.redis_server import RedisServer
from tests.harness.services import Service, start_flower, start_site_workers, stop_all
from tests.harness.signing import signed
from tests.harness.sshd import SshdCluster
from tests.harness.zfs_backend import StandinBackend
from tests.harness.zrep_actor import Zrep, ZrepHost
from workers.filelock import FileLocks
from workers.keys import host_key

HOSTS = ("qa", "qb")


@pytest.fixture(scope="module")
def services(
    sshd_cluster: SshdCluster, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Service]]:
    logdir = tmp_path_factory.mktemp("services")
    started = start_site_workers(
        sshd_cluster, HOSTS, redis_server.url, logdir, ZREP_INFILTER="pv -q -L 4m"
    )
    try:
        started["flower"] = start_flower(redis_server.url, logdir)
        yield started
    finally:
        stop_all(started)


@pytest.fixture
def q(
    fleet: Callable[..., Fleet], services: dict[str, Service], redis_server: RedisServer
) -> tuple[Fleet, Producer, dict[str, Service]]:
    f = fleet(*HOSTS)
    producer = Producer(app=make_app(signed({"ZREPQ_BROKER_URL": redis_server.url})))
    return f, producer, services


def done(r: Any, timeout: float = 120) -> dict[str, Any]:
    return wait({"t": r}, timeout=timeout, show=False)["t"]


def setup_pair(f: Fleet, p: Producer, leaf: str = "prod", size: int = 0) -> tuple[Site, Site]:
    a, b = f["qa"], f["qb"]
    a.zfs.zfs("create", a.fs(leaf))
    a.zfs.write(a.fs(leaf), "data.txt", b"hello\n")
    if size:
        a.zfs.write(a.fs(leaf), "big.bin", os.urandom(size))
    rec = done(p.init(a.fs(leaf), "qb", b.fs(leaf), host="qa"))
    assert rec["ok"], rec
    return a, b


def test_a_worker_registers_at_start_and_again_when_redis_forgets_it(
    q: tuple[Fleet, Producer, dict[str, Service]], redis_server: RedisServer
) -> None:
    # First in this module: the workers have just started on a Redis without their entries.
    _, p, services = q
    assert set(HOSTS) <= set(p.hosts())
    # A fresh start registers once, without the warning meant for a Redis that lost its data.
    assert "registering again" not in services["qa"].output()
    client = redis_server.client(socket_timeout=5)
    client.delete(host_key("qa"))
    assert wait_until(lambda: client.exists(host_key("qa")), 15, 0.2)  # next heartbeat
    assert "host qa is missing from the registry (zrepq:host:qa;" in services["qa"].output()


def test_init_and_sync_through_the_queue(q: tuple[Fleet, Producer, dict[str, Service]]) -> None:
    f, p, _ = q
    a, b = setup_pair(f, p)
    a.zfs.write(a.fs("prod"), "data.txt", b"queued sync\n")
    rec = done(p.sync(f"qa:{a.fs('prod')}"))
    assert rec["ok"] and rec["result"]["status"] == "synced"
    assert rec["result"]["snapshot"] == f"{a.fs('prod')}@zrep_000001"
    assert b.zfs.read(b.fs("prod"), "data.txt") == b"queued sync\n"


def test_synconly_and_rollback_are_their_own_tasks_and_zrep_sync_keeps_the_old_forms(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    """`zrep.synconly` and `zrep.rollback` by name; `zrep.sync` with `snapshot=false` and
    with `fs@snap` (how services called them before) does the same, with the same record."""
    f, p, _ = q
    a, b = setup_pair(f, p)
    src, dst = a.fs("prod"), b.fs("prod")

    def by_name(name: str, **kwargs: Any) -> dict[str, Any]:
        return done(p.app.send_task(name, kwargs={"host": "qa", **kwargs}, queue=c.queue_for("qa")))

    results = {}
    for n, (name, kwargs) in enumerate(
        [(c.SYNCONLY, {"fs": src}), (c.SYNC, {"fs": src, "snapshot": False})], start=1
    ):
        a.zfs.write(src, "data.txt", f"version {n}\n".encode())
        assert done(p.snaponly(src, host="qa"))["ok"]
        rec = by_name(name, **kwargs)
        assert rec["ok"] and rec["result"]["status"] == "synced", rec
        assert rec["result"]["snapshot"] == f"{src}@zrep_{n:06x}"
        results[name] = rec
    assert b.zfs.read(dst, "data.txt") == b"version 2\n"
    assert results[c.SYNCONLY].keys() == results[c.SYNC].keys()
    assert by_name(c.SYNCONLY, fs=src)["result"]["status"] == "uptodate"  # nothing new

    rec = by_name(c.ROLLBACK, snapshot=f"{src}@zrep_000001")
    assert rec["ok"] and rec["result"]["status"] == "rolled-back", rec
    assert b.zfs.read(dst, "data.txt") == b"version 1\n"
    rec = by_name(c.SYNC, fs=f"{src}@zrep_000000")
    assert rec["ok"] and rec["result"]["status"] == "rolled-back", rec
    assert b.zfs.read(dst, "data.txt") == b"hello\n"
    # The Python API's older forms send the new tasks.
    assert done(p.sync(src, host="qa", snapshot=False, changed_only=True))["ok"]
    assert done(p.sync(f"{src}@zrep_000000", host="qa"))["result"]["status"] == "rolled-back"


def test_progress_is_visible_in_result_backend_and_flower(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    f, p, svcs = q
    a, _ = setup_pair(f, p)
    a.zfs.write(a.fs("prod"), "big.bin", os.urandom(20_000_000))  # ~5 s through pv -L 4m
    r = p.sync(a.fs("prod"), host="qa")
    flower = f"http://127.0.0.1:{svcs['flower'].port}"
    seen_backend: dict[str, Any] = {}
    seen_flower: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not r.ready():
        if r.state == "PROGRESS" and isinstance(r.info, dict) and r.info.get("bytes_sent"):
            seen_backend = dict(r.info)
        try:
            with urllib.request.urlopen(f"{flower}/api/task/info/{r.id}", timeout=5) as resp:
                info = json.loads(resp.read())
            if info.get("state") == "PROGRESS":
                seen_flower = info
        except OSError:
            pass
        time.sleep(0.3)
    assert done(r)["ok"]
    assert seen_backend.get("bytes_sent", 0) > 0 and seen_backend.get("total", 0) > 10_000_000
    assert {"dataset", "snapshot", "rate", "eta"} <= set(seen_backend)
    assert seen_flower.get("state") == "PROGRESS"
    assert "bytes_sent" in str(seen_flower.get("result"))
    # The finished task is in Flower's task list with its result.
    with urllib.request.urlopen(f"{flower}/api/tasks?limit=200", timeout=5) as resp:
        tasks = json.loads(resp.read())
    assert r.id in tasks and tasks[r.id]["name"] == c.SYNC


def test_sync_all_summarises_ok_and_failed(q: tuple[Fleet, Producer, dict[str, Service]]) -> None:
    f, p, _ = q
    a, b = f["qa"], f["qb"]
    for leaf in ("one", "two", "three"):
        a.zfs.zfs("create", a.fs(leaf))
        a.zfs.write(a.fs(leaf), "f", leaf.encode())
        assert done(p.init(a.fs(leaf), "qb", b.fs(leaf), host="qa"))["ok"]
    b.zfs.zfs("snapshot", f"{b.fs('two')}@diverged")  # this one must fail
    results = p.sync_all(["qa", "qb"])
    recs = wait(results, timeout=120, show=False)
    qa = recs["qa"]["result"]
    by_ds = {row["dataset"]: row for row in qa["datasets"]}
    assert by_ds[a.fs("one")]["status"] == "synced"
    assert by_ds[a.fs("three")]["status"] == "synced"
    assert by_ds[a.fs("two")]["status"] == "failed"
    assert "diverged" in by_ds[a.fs("two")]["error"]
    assert qa["counts"] == {"synced": 2, "failed": 1}
    assert recs["qb"]["ok"] and recs["qb"]["result"]["datasets"] == []  # qb masters nothing


def test_sync_all_leaves_no_member_result_in_redis(
    q: tuple[Fleet, Producer, dict[str, Service]], redis_server: RedisServer
) -> None:
    """A `sync all` keeps its summary and nothing of its members: no `celery-task-meta-*` of
    a member (no STARTED, no SUCCESS, and a long stream's PROGRESS deleted at its end), and no
    chord state but Celery's done marker, which expires within minutes. `--wait` (the
    producer's wait on the `sync_all` result) still gets every dataset's outcome."""
    f, p, _ = q
    a, b = f["qa"], f["qb"]
    leaves = ("m1", "m2", "m3")
    for leaf in leaves:
        a.zfs.zfs("create", a.fs(leaf))
        a.zfs.write(a.fs(leaf), "f", leaf.encode())
        assert done(p.init(a.fs(leaf), "qb", b.fs(leaf), host="qa"))["ok"]
    # ~1 s through the receiving side's `pv -L 4m`: its PROGRESS state is stored meanwhile
    a.zfs.write(a.fs("m1"), "big.bin", os.urandom(4_000_000))
    b.zfs.zfs("snapshot", f"{b.fs('m3')}@diverged")  # a failure is an outcome like any other
    client = redis_server.client()
    before = set(client.keys("celery-task-meta-*"))
    results = p.sync_all(["qa"])
    progress_seen: set[bytes] = set()
    deadline = time.monotonic() + 120
    while not results["qa"].ready() and time.monotonic() < deadline:
        for key in client.keys("celery-task-meta-*"):
            if key not in before and b'"PROGRESS"' in (client.get(key) or b""):
                progress_seen.add(key)
        time.sleep(0.05)
    recs = wait(results, timeout=120, show=False)
    rows = {row["dataset"]: row for row in recs["qa"]["result"]["datasets"]}
    assert {ds: row["status"] for ds, row in rows.items()} == {
        a.fs("m1"): "synced",
        a.fs("m2"): "synced",
        a.fs("m3"): "failed",
    }
    assert rows[a.fs("m1")]["bytes"] > 4_000_000 and "diverged" in rows[a.fs("m3")]["error"]
    assert progress_seen, "the long member's PROGRESS state was never stored"
    # Only the summary's result is new (under the `sync_all` task's id, which it replaced).
    left = set(client.keys("celery-task-meta-*")) - before
    assert left == {f"celery-task-meta-{results['qa'].id}".encode()}, left
    assert client.ttl(next(iter(left))) > 86400

    # The member that completes the chord publishes the summary and only then deletes the
    # chord's state (celery/backends/redis.py `on_chord_part_return`): the summary can be
    # ready a moment before that.
    def chord_keys_left() -> list[bytes]:
        keys = client.keys("celery-taskset-meta-*")
        return [k for k in keys if not (k.endswith(b".c") and 0 < client.ttl(k) <= 600)]

    settle = time.monotonic() + 10
    while chord_keys_left() and time.monotonic() < settle:
        time.sleep(0.05)
    left_keys = chord_keys_left()
    assert not left_keys, [(k, client.type(k), client.ttl(k)) for k in left_keys]
    # The per-dataset sync records are one hash field per dataset, written over each run.
    fields = {c.sync_record_field("zrep", "qa", a.fs(leaf)).encode() for leaf in leaves}
    assert fields <= set(client.hkeys(c.syncs_key("qa")))
    assert client.type(c.syncs_key("qa")) == b"hash"


def test_a_sync_record_goes_with_clear_handback_and_the_next_sync_all(
    q: tuple[Fleet, Producer, dict[str, Service]], redis_server: RedisServer
) -> None:
    """`zrepq:syncs` keeps no record of a dataset that left zrepq: `clear` and `handback`
    delete theirs, and `sync all` deletes its host's records of masters it no longer finds
    (here one destroyed); `status --fleet`'s and the exporter's reader shows the rest."""
    f, p, _ = q
    a = f["qa"]
    leaves = ("k1", "k2", "k3", "k4")
    for leaf in leaves:
        setup_pair(f, p, leaf)
        assert done(p.sync(f"qa:{a.fs(leaf)}"))["ok"]
    client = redis_server.client()

    def field(leaf: str, tag: str = "zrep", host: str = "qa") -> str:
        return c.sync_record_field(tag, host, a.fs(leaf))

    def shown() -> set[str]:
        return {f"{r['tag']}:{r['host']}:{r['dataset']}" for r in fleet_records(p)}

    assert {field(leaf) for leaf in leaves} <= shown()
    # Records of another tag (dr: none on this host) and of another host's dataset.
    # And one written after a sync all began (an init finishing while it enumerates).
    dr, qb, late = field("k4", tag="dr"), field("k4", host="qb"), field("k9")
    for name, over in (
        (dr, {"tag": "dr"}),
        (qb, {"host": "qb"}),
        (late, {"dataset": a.fs("k9"), "last_attempt": time.time() + 3600}),
    ):
        rec = {"host": "qa", "dataset": a.fs("k4"), "tag": "zrep", "last_attempt": 1.0, **over}
        client.hset(c.syncs_key(rec["host"]), name, json.dumps(rec))
    assert done(p.clear(a.fs("k1"), host="qa"))["ok"]
    assert done(p.handback(a.fs("k2"), host="qa"))["ok"]
    assert field("k1") not in shown() and field("k2") not in shown()
    assert not client.hexists(c.syncs_key("qa"), field("k1"))
    assert not client.hexists(c.syncs_key("qa"), field("k2"))
    # Destroyed behind zrepq's back: the next sync all of its host finds it gone.
    held = a.zfs.zfs("holds", "-H", *a.zfs.snapshots(a.fs("k3"))).stdout.splitlines()
    for snap, tag, *_ in (line.split("\t") for line in held):
        a.zfs.zfs("release", tag, snap)
    a.zfs.zfs("destroy", "-r", a.fs("k3"))
    assert field("k3") in shown()
    # zrep's `sync all`, one tag: that tag's records go, dr's stays.
    recs = wait(p.sync_all(["qa"], every_tag=False), timeout=120, show=False)
    synced = {row["dataset"] for row in recs["qa"]["result"]["datasets"]}
    assert a.fs("k4") in synced and a.fs("k3") not in synced
    now = shown()
    assert field("k3") not in now and not client.hexists(c.syncs_key("qa"), field("k3"))
    assert {field("k4"), dr, qb, late} <= now
    # Every tag (the default): qa is master of nothing under dr, so that record goes too;
    # qb's records are for qb's own sync all.
    wait(p.sync_all(["qa"]), timeout=120, show=False)
    now = shown()
    assert field("k4") in now and dr not in now and qb in now
    client.hdel(c.syncs_key("qb"), qb)
    client.hdel(c.syncs_key("qa"), late)


def test_failover_and_takeover_through_both_queues(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    f, p, _ = q
    a, b = setup_pair(f, p)
    rec = done(p.failover(a.fs("prod"), host="qa"))
    assert rec["ok"], rec
    # The result is the other side's: qb's worker ran `takeover -L`.
    assert rec["result"]["role"] == "master" and rec["result"]["host"] == "qb"
    assert b.zfs.get("zrep:master", b.fs("prod")) == "yes"
    assert a.zfs.get("zrep:master", a.fs("prod")) == "-"
    again = done(p.failover(a.fs("prod"), host="qa"))  # re-delivered / repeated
    assert again["ok"] and "already standby" in again["result"]["message"]
    back = done(p.takeover(a.fs("prod"), host="qa"))  # asks qb to fail over, back to qa
    assert back["ok"], back
    assert a.zfs.get("zrep:master", a.fs("prod")) == "yes"
    assert b.zfs.get("zrep:master", b.fs("prod")) == "-"


def test_status_and_refresh_through_the_queue(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    f, p, _ = q
    a, b = setup_pair(f, p)
    a.zfs.write(a.fs("prod"), "pulled", b"x")
    assert done(p.refresh(b.fs("prod"), host="qb"))["ok"]
    assert b.zfs.read(b.fs("prod"), "pulled") == b"x"
    rec = done(p.status("qa"))
    assert rec["result"]["text"].startswith(f"{a.fs('prod'):<52} last: 20")
    assert rec["result"]["rows"][0]["last_sent"] == f"{a.fs('prod')}@zrep_000001"


def test_a_lost_base_is_synced_from_the_cursor_bookmark_through_the_queue(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    """Issue 15, point 1, end to end: the hold released and the base destroyed by hand, the
    queued sync sends `-i fs#zrepq_zrep_000001` instead of failing; the record and
    `status -v` say so."""
    f, p, _ = q
    a, b = setup_pair(f, p, "bm")
    src = a.fs("bm")
    assert done(p.sync(f"qa:{src}"))["ok"]
    a.zfs.zfs("release", "zrepq:zrep:lastsent", f"{src}@zrep_000001")
    a.zfs.zfs("destroy", f"{src}@zrep_000001")
    a.zfs.write(src, "data.txt", b"after the base went\n")
    rec = done(p.sync(f"qa:{src}"))
    assert rec["ok"], rec
    assert rec["result"]["from_bookmark"] == f"{src}#zrepq_zrep_000001"
    assert rec["result"]["snapshot"] == f"{src}@zrep_000002"
    assert b.zfs.read(b.fs("bm"), "data.txt") == b"after the base went\n"
    st = done(p.status("qa", [src], verbose=True))["result"]
    assert st["rows"][0]["from_bookmark"]["bookmark"] == f"{src}#zrepq_zrep_000001"
    assert f"synced from bookmark {src}#zrepq_zrep_000001" in st["text"]


def test_an_encrypted_dataset_is_replicated_raw_through_the_queue(
    q: tuple[Fleet, Producer, dict[str, Service]], tmp_path: Path
) -> None:
    """Issue 15, point 2, end to end: a passphrase-encrypted master is initialized and synced
    raw through the queue (the standby holds ciphertext and no key), `status -v` shows the
    standby's keystatus, and a queued takeover loads the key on the new master before it
    declares it writable (the key file is where the raw stream's keylocation points)."""
    f, p, _ = q
    a, b = f["qa"], f["qb"]
    key = tmp_path / "passphrase"
    key.write_bytes(b"correct horse battery\n")
    key.chmod(0o600)
    src, dst = a.fs("enc"), b.fs("enc")
    a.zfs.zfs("create", "-o", "encryption=on", "-o", "keyformat=passphrase",
              "-o", f"keylocation=file://{key}", src)  # fmt: skip
    a.zfs.write(src, "secret.txt", b"secret 1\n")
    assert done(p.init(src, "qb", dst, host="qa"))["ok"]
    a.zfs.write(src, "secret.txt", b"secret 2\n")
    rec = done(p.sync(f"qa:{src}"))
    assert rec["ok"], rec
    assert b.zfs.get("encryption", dst) != "off" and b.zfs.get("encryptionroot", dst) == dst
    assert b.zfs.get("keystatus", dst) == "unavailable"
    st = done(p.status("qa", [src], verbose=True))["result"]
    assert st["rows"][0]["standby_keystatus"] == "unavailable"
    assert f"standby qb:{dst} keystatus: unavailable" in st["text"]
    back = done(p.takeover(dst, host="qb"))  # qa fails over, qb loads the key and takes over
    assert back["ok"], back
    assert b.zfs.get("keystatus", dst) == "available" and b.zfs.get("zrep:master", dst) == "yes"
    assert b.zfs.read(dst, "secret.txt") == b"secret 2\n"


def test_one_sync_all_keeps_a_near_and_a_far_standby_current_each_on_its_own(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    """Issue 15, point 4: one dataset, two standbys (tags `near` and `far`, zrep's way), both
    kept current by one queued `sync all` on the master's host; the far one fails (its
    standby was snapshotted there) and the near one is synced all the same; each pair has
    its own savecount, hold and cursor, and `status --fleet` lists both."""
    f, p, _ = q
    a, b = f["qa"], f["qb"]
    src = a.fs("multi")
    a.zfs.zfs("create", src)
    a.zfs.write(src, "data.txt", b"v1\n")
    near, far = Producer(app=p.app, tag="near"), Producer(app=p.app, tag="far")
    assert done(near.init(src, "qb", b.fs("near"), host="qa"))["ok"]
    assert done(far.init(src, "qb", b.fs("far"), host="qa"))["ok"]
    a.zfs.zfs("set", "far:savecount=2", src)
    for _ in range(3):
        recs = wait(p.sync_all(["qa"]), timeout=120, show=False)
        rows = {(r["tag"], r["dataset"]): r for r in recs["qa"]["result"]["datasets"]}
        assert rows[("near", src)]["status"] == "synced", rows
        assert rows[("far", src)]["status"] == "synced", rows
    names = a.zfs.zfs("list", "-H", "-t", "snapshot,bookmark", "-o", "name", "-d", "1", src)
    mine = [n.split(src, 1)[1] for n in names.stdout.split()]
    # near keeps 5 (its default savecount), far 2; each its own cursor bookmark
    assert [n for n in mine if n.startswith("@near_")] == [f"@near_{i:06x}" for i in range(4)]
    assert [n for n in mine if n.startswith("@far_")] == ["@far_000002", "@far_000003"]
    assert sorted(n for n in mine if n.startswith("#")) == [
        "#zrepq_far_000003",
        "#zrepq_near_000003",
    ]
    for tag in ("near", "far"):
        out = a.zfs.zfs("holds", "-H", f"{src}@{tag}_000003").stdout
        assert f"zrepq:{tag}:lastsent" in out
    # the far standby is written to and snapshotted there: its pair fails, near goes on
    b.zfs.zfs("snapshot", f"{b.fs('far')}@stray")
    a.zfs.write(src, "data.txt", b"v2\n")
    recs = wait(p.sync_all(["qa"]), timeout=120, show=False)
    rows = {(r["tag"], r["dataset"]): r for r in recs["qa"]["result"]["datasets"]}
    assert rows[("near", src)]["status"] == "synced"
    assert rows[("far", src)]["status"] == "failed" and "diverged" in rows[("far", src)]["error"]
    assert b.zfs.read(b.fs("near"), "data.txt") == b"v2\n"
    st = done(p.status("qa", every_tag=True))["result"]["rows"]
    assert {(r["tag"], r["dest_fs"]) for r in st if r["dataset"] == src} == {
        ("near", b.fs("near")),
        ("far", b.fs("far")),
    }


def test_hostile_and_malformed_messages_are_rejected(
    q: tuple[Fleet, Producer, dict[str, Service]],
    redis_server: RedisServer,
) -> None:
    f, p, svcs = q
    app = p.app
    calls_before = len(f["qa"].zfs.calls())
    bad = [
        {"host": "qa", "fs": "poolqa/x; zfs destroy -r poolqa"},
        {"host": "qa", "fs": "$(reboot)"},
        {"host": "qa", "fs": "poolqa/x", "extra": "field"},
        {"host": "qa", "fs": ["not", "a", "string"]},
        {"host": "qb", "fs": "poolqa/x"},  # a task for qb sent to qa's queue
    ]
    for kwargs in bad:
        r = app.send_task(c.SYNC, kwargs=kwargs, queue=c.queue_for("qa"))
        r.get(timeout=30, propagate=False)
        assert r.state == "FAILURE"
        assert isinstance(r.result, TaskFailed)
        assert r.result.record["kind"] == "validation"
    # A pickled message is never executed: the worker refuses the content type.
    r = app.send_task(c.STATUS, kwargs={"host": "qa"}, queue=c.queue_for("qa"), serializer="pickle")
    time.sleep(2)
    assert r.state == "PENDING"
    assert "ContentDisallowed" in svcs["qa"].output() or "disallowed" in svcs["qa"].output()
    assert len(f["qa"].zfs.calls()) == calls_before  # nothing ran zfs


def test_producer_errors_are_clear(q: tuple[Fleet, Producer, dict[str, Service]]) -> None:
    _f, p, _ = q
    with pytest.raises(c.ValidationError, match="unknown host 'nosuch'"):
        p.sync("poolx/fs", host="nosuch")
    with pytest.raises(c.ValidationError, match="invalid dataset name"):
        p.sync("poolqa/a;b", host="qa")
    with pytest.raises(c.ValidationError, match="which host"):
        p.sync("poolqa/prod")
    dead = Producer(
        app=make_app(signed({"ZREPQ_BROKER_URL": "redis://127.0.0.1:1/0"})), connect_timeout=1
    )
    with pytest.raises(
        c.HostUnreachable, match=r"cannot reach the broker at redis://127\.0\.0\.1:1"
    ):
        dead.sync("poolqa/prod", host="qa")
    rec = done(p.sync("poolqa/nothere", host="qa"))
    assert not rec["ok"] and "does not exist" in rec["error"]["message"]


def test_cli_waits_prints_zrep_text_and_exits_with_status(
    q: tuple[Fleet, Producer, dict[str, Service]],
    redis_server: RedisServer,
) -> None:
    f, p, _ = q
    a, _b = setup_pair(f, p)
    env = {**os.environ, "ZREPQ_BROKER_URL": redis_server.url, "PYTHONPATH": str(REPO)}

    def zrepq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producer.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    res = zrepq("-S", f"qa:{a.fs('prod')}", "--wait")
    assert res.returncode == 0, res.stderr
    assert "synced" in res.stdout and "zrep_000001" in res.stdout
    res = zrepq("-H", "qa", "status")
    assert res.returncode == 0 and res.stdout.startswith(f"{a.fs('prod'):<52} last: ")
    res = zrepq("-H", "qa", "--json", "sync", "--wait", "poolqa/missing")
    assert res.returncode == 1 and '"ok": false' in res.stdout
    res = zrepq("sync", "poolqa/prod")  # no host given
    assert res.returncode == 1 and "which host" in res.stderr
    res = zrepq("-H", "qa", "sync", "poolqa/prod")  # no --wait: returns the task id at once
    assert res.returncode == 0 and "queued as" in res.stdout
    # Let that background sync finish before the next test wipes the hosts under it.
    p.app.AsyncResult(res.stdout.split("queued as ")[1].strip()).get(timeout=120, propagate=False)


def test_outcome_of_a_failed_task_is_its_record(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    _f, p, _ = q
    r = p.sync("poolqa/notconfigured", host="qa")
    r.get(timeout=60, propagate=False)
    rec = outcome(r)
    assert rec["ok"] is False and rec["error"]["host"] == "qa"


def test_other_services_trigger_tasks_through_flowers_api(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    f, p, svcs = q
    a, _b = setup_pair(f, p)
    # Flower passes every body field but args/kwargs to send_task as an option.
    body = json.dumps(
        {"kwargs": {"host": "qa", "fs": a.fs("prod")}, "queue": c.queue_for("qa")}
    ).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{svcs['flower'].port}/api/task/send-task/{c.SYNC}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        task_id = json.loads(resp.read())["task-id"]
    rec = done(p.app.AsyncResult(task_id))
    assert rec["ok"], rec
    assert rec["result"]["snapshot"] == f"{a.fs('prod')}@zrep_000001"


def test_pause_resume_and_status_truth_through_the_queue(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    f, p, _ = q
    a, b = f["qa"], f["qb"]
    for leaf in ("p1", "p2", "p3"):
        a.zfs.zfs("create", a.fs(leaf))
        a.zfs.write(a.fs(leaf), "f", leaf.encode())
        assert done(p.init(a.fs(leaf), "qb", b.fs(leaf), host="qa"))["ok"]
    assert done(p.pause(a.fs("p2"), host="qa", reason="maintenance"))["ok"]
    # A paused fs in the middle of sync all: skipped and reported as paused, not failed.
    recs = wait(p.sync_all(["qa"]), timeout=120, show=False)
    rows = {r["dataset"]: r for r in recs["qa"]["result"]["datasets"]}
    assert rows[a.fs("p2")]["status"] == "paused"
    assert rows[a.fs("p1")]["status"] == rows[a.fs("p3")]["status"] == "synced"
    assert recs["qa"]["result"]["failed"] == 0
    # A direct sync says it is paused and does nothing.
    rec = done(p.sync(a.fs("p2"), host="qa"))
    assert not rec["ok"] and rec["error"]["kind"] == "paused"
    assert "maintenance" in rec["error"]["message"]
    # A failed sync raises the error flag; status shows it, apart from a deliberate rollback.
    b.zfs.zfs("snapshot", f"{b.fs('p1')}@stray")
    assert not done(p.sync(a.fs("p1"), host="qa"))["ok"]
    assert done(p.sync(f"{a.fs('p3')}@zrep_000000", host="qa"))["ok"]  # deliberate rollback
    st = {r["dataset"]: r for r in done(p.status("qa"))["result"]["rows"]}
    assert st[a.fs("p1")]["error"]["message"].startswith("destination")
    assert st[a.fs("p2")]["paused"]["reason"] == "maintenance"
    assert st[a.fs("p3")]["error"] is None
    assert st[a.fs("p3")]["rolled_back"]["snapshot"] == f"{a.fs('p3')}@zrep_000000"
    # The next good sync lowers the flag; resume puts p2 back.
    b.zfs.zfs("destroy", f"{b.fs('p1')}@stray")
    assert done(p.sync(a.fs("p1"), host="qa"))["ok"]
    assert done(p.resume(a.fs("p2"), host="qa"))["result"] is True
    st = {r["dataset"]: r for r in done(p.status("qa"))["result"]["rows"]}
    assert st[a.fs("p1")]["error"] is None and st[a.fs("p2")]["paused"] is None


def zrep_on(site: Site, other: Site) -> Zrep:
    """Upstream zrep (acted out) on `site`, reaching `other` over its real sshd."""

    def host(s: Site) -> ZrepHost:
        reach = shlex.join(s.sshd.ssh_argv())
        return ZrepHost(s.name, StandinBackend(s.zfs, fresh=False), reach)

    return Zrep(host(site), [host(other)])


def test_handback_through_the_queue_then_zrep_over_ssh(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    """zrepq runs a pair, `handback` through the queue, then zrep takes it back over ssh:
    sync and expire run with nothing in their way (issue 12, point 2)."""
    f, p, _ = q
    a, b = setup_pair(f, p)
    src, dst = a.fs("prod"), b.fs("prod")
    assert done(p.sync(src, host="qa"))["ok"]
    assert done(p.pause(src, host="qa", reason="back to zrep"))["ok"]
    rec = done(p.handback(src, host="qa"))
    assert rec["ok"], rec
    r = rec["result"]
    assert r["released"] == [f"qa:{src}@zrep_000001", f"qb:{dst}@zrep_000001"]
    assert f"qa:{src} zrepq:zrep:paused" in r["properties"] and r["aborted"] == []
    assert handback_text(src, r).startswith(f"{src}: handed back to zrep (released 2 holds")
    zrep = zrep_on(a, b)
    for i in range(5):
        a.zfs.write(src, "data.txt", f"zrep {i}".encode())
        run = zrep.sync(src)
        assert run.rc == 0 and run.stderr == "", run
        assert f"sending {src}@zrep_{2 + i:06x} to qb:{dst}" in run.stdout
    run = zrep.expire(src)
    assert run.rc == 0 and run.stderr == "", run
    assert len(a.zfs.snapshots(src)) == len(b.zfs.snapshots(dst)) == 5
    assert b.zfs.read(dst, "data.txt") == b"zrep 4"


def test_a_worker_and_zrepq_local_on_one_host_exclude_each_other_by_the_lock_file(
    q: tuple[Fleet, Producer, dict[str, Service]],
) -> None:
    """No zrep on this host, so no zrep lock marks (issue 17: 4 zfs calls fewer a sync): the
    worker takes zrepq-local's lock file of the dataset after its lease (same directory,
    `ZREPQ_LOCK_DIR`, and name), so a `zrepq-local sync` run here from cron refuses while the
    queue's sync works, and a queued sync refuses while `zrepq-local` works."""
    f, p, _ = q
    a, b = setup_pair(f, p, "excl")
    src, dst = a.fs("excl"), b.fs("excl")
    name = f"qa:zrep:{src}"
    files = FileLocks(os.environ["ZREPQ_LOCK_DIR"])
    local = [sys.executable, "-c", "from workers.cli import run; run()", "sync", src]
    env = {
        **a.zfs.env,
        "PYTHONPATH": str(REPO),
        "ZREPQ_CONFIG": "none",
        "ZREP_SRC_HOST": "qa",
        "ZREPQ_SSH_CONFIG": str(a.sshd.config_file),
        "ZREPQ_LOCK_DIR": os.environ["ZREPQ_LOCK_DIR"],
    }
    env.pop("ZREPQ_BROKER_URL", None)
    # The worker syncs 8 MB through its 4 MB/s filter: ~2 s holding the lock file.
    a.zfs.write(src, "big.bin", os.urandom(8_000_000))
    r = p.sync(src, host="qa")
    assert wait_until(lambda: files.holder(name) is not None, 30)
    token = files.holder(name)
    assert token is not None and token.startswith("qa:") and ":sync/" in token  # the worker's
    assert a.zfs.zfs("get", "-H", "-o", "value", "zrep:lock-pid", src).stdout.strip() == "-"
    res = subprocess.run(local, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0] == f"Error: Cannot lock {src}. Cannot continue"
    assert lines[1].startswith(f"{name} is locked by pid ") and "(sync/" in lines[1]
    rec = done(r)
    assert rec["ok"] and rec["result"]["status"] == "synced", rec
    assert files.holder(name) is None
    # The other way: zrepq-local holds it (3 MB at 1 MB/s), the queued sync refuses.
    a.zfs.write(src, "big.bin", os.urandom(3_000_000))
    mine = subprocess.Popen(
        local, env={**env, "ZREP_INFILTER": "pv -q -L 1m"}, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(lambda: files.holder(name) is not None, 30)
        rec = done(p.sync(src, host="qa"))
        assert rec["ok"] is False, rec
        message = rec["error"]["message"]
        assert message.startswith(f"Cannot lock {src}. Cannot continue"), message
        assert f"{name} is locked by pid {mine.pid} on qa (sync)" in message
        assert mine.wait(60) == 0
    finally:
        if mine.poll() is None:
            mine.kill()
            mine.wait()
    assert done(p.sync(src, host="qa"))["ok"]
    assert a.zfs.snapshots(src)[-1].split("@")[1] == b.zfs.snapshots(dst)[-1].split("@")[1]


NO_ZREPQ_CLIENT = r"""
import json, sys
from celery import Celery
broker = sys.argv[1]
app = Celery(broker=broker, backend=broker)
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
r = app.send_task("zrep.lastsent", kwargs={"host": "qa", "fs": sys.argv[2]},
                  queue="zrepq.host.qa")
r.get(timeout=60, propagate=False)
print(json.dumps({"state": r.state, "result": str(r.result)}))
"""


def test_a_service_without_zrepq_code_or_key_is_refused(
    q: tuple[Fleet, Producer, dict[str, Service]],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """A rogue producer: the broker's address (and password) but no signing key. Its task
    is refused as `unauthorized` before anything runs (docs/tasks.md: how a service signs)."""
    f, p, _ = q
    a, _b = setup_pair(f, p)
    script = tmp_path / "client.py"
    script.write_text(NO_ZREPQ_CLIENT)
    calls = len(a.zfs.calls())
    # Run from an empty directory with no PYTHONPATH: only celery is importable, no zrepq.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-I", str(script), redis_server.url, a.fs("prod")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["state"] == "FAILURE", out
    assert "'kind': 'unauthorized'" in out["result"], out
    assert "unsigned message (no zrepq_auth header)" in out["result"], out
    assert len(a.zfs.calls()) == calls  # no zfs ran


def test_flower_with_basic_auth_starts_a_sync_and_shows_progress_and_result(
    q: tuple[Fleet, Producer, dict[str, Service]],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    import base64

    f, p, _ = q
    a, _b = setup_pair(f, p)
    a.zfs.write(a.fs("prod"), "big.bin", os.urandom(16_000_000))  # ~4 s through pv -L 4m
    flower = start_flower(redis_server.url, tmp_path, basic_auth="ops:s3cret")
    try:
        base = f"http://127.0.0.1:{flower.port}"
        auth = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/api/tasks", timeout=10)
        assert denied.value.code == 401
        body = json.dumps(
            {"kwargs": {"host": "qa", "fs": a.fs("prod")}, "queue": c.queue_for("qa")}
        ).encode()
        req = urllib.request.Request(
            f"{base}/api/task/send-task/{c.SYNC}",
            data=body,
            headers={**auth, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            task_id = json.loads(resp.read())["task-id"]
        states, info = set(), {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            req = urllib.request.Request(f"{base}/api/task/info/{task_id}", headers=auth)
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    info = json.loads(resp.read())
            except urllib.error.HTTPError:
                info = {}
            states.add(info.get("state"))
            if info.get("state") == "SUCCESS":
                break
            time.sleep(0.3)
        assert "PROGRESS" in states, states
        assert info["state"] == "SUCCESS"
        assert f"{a.fs('prod')}@zrep_000001" in str(info["result"])
    finally:
        flower.stop()


def test_cli_text_of_failover_takeover_expire_uptodate_clear(
    q: tuple[Fleet, Producer, dict[str, Service]],
    redis_server: RedisServer,
) -> None:
    """`zrepq VERB --wait` in text mode: each side labelled with its own host and dataset,
    expire in zrep's words, no raw JSON."""
    f, p, _ = q
    a, b = setup_pair(f, p)
    src, dst = a.fs("prod"), b.fs("prod")
    env = {**os.environ, "ZREPQ_BROKER_URL": redis_server.url, "PYTHONPATH": str(REPO)}

    def zrepq(*args: str) -> tuple[str, str, int]:
        res = subprocess.run(
            [sys.executable, "-m", "producer.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return res.stdout, res.stderr, res.returncode

    assert zrepq("-H", "qa", "failover", "--wait", src) == (
        f"qa:{src}: now standby (after a final sync of {src}@zrep_000001)\nqb:{dst}: now master\n",
        "",
        0,
    )
    assert zrepq("-H", "qa", "failover", "--wait", src) == (
        f"qa:{src}: {src} is already standby; nothing to do\n",
        "",
        0,
    )
    # takeover on the standby asks the master (qb) to fail over, which hands back to qa.
    assert zrepq("-H", "qa", "takeover", "--wait", src) == (
        f"qb:{dst}: now standby (after a final sync of {dst}@zrep_000002)\nqa:{src}: now master\n",
        "",
        0,
    )
    assert a.zfs.get("zrep:master", src) == "yes" and b.zfs.get("zrep:master", dst) == "-"
    zrep_expire = (
        f"Expiring zrep snaps on {src}\n"
        f"Also running expire on qb:{dst} now...\n"
        f"Expiring zrep snaps on {dst}\n"
    )
    assert zrepq("-H", "qa", "expire", "--wait", src) == (zrep_expire, "", 0)
    assert zrepq("-H", "qa", "expire", "--wait") == (zrep_expire, "", 0)  # every master on qa
    assert zrepq("-H", "qb", "expire", "-L", "--wait", dst) == (
        f"Expiring zrep snaps on {dst}\n",
        "",
        0,
    )
    assert zrepq("-H", "qa", "uptodate", src)[2] == 0
    out, err, code = zrepq("-H", "qa", "uptodate", "poolqa/missing")
    assert (out, code) == ("", 1) and "Error: poolqa/missing:" in err and "does not exist" in err
    assert zrepq("-H", "qa", "clear", "-f", "--wait", src) == (
        f"Destroying any zrep-related snapshots from {src}\n"
        + "".join(f"  destroyed {src}@zrep_00000{i}\n" for i in range(3))
        + f"  destroyed {src}#zrepq_zrep_000001\n"  # zrepq's cursor, of the last sync
        + f"Removing zrep-related properties from {src}\n",
        "",
        0,
    )
