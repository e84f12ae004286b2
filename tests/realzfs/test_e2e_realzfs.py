"""End to end on real OpenZFS: two QEMU guests are two storage hosts running zrepq workers.

Redis and the producer run here; each guest runs `zrepq-worker` installed from this checkout;
the replication stream goes guest to guest over ssh (tests/realzfs/e2e.py sets this up).
Runs only when real OpenZFS is requested (`--zfs=real-2.3`, `ZREPQ_REALZFS=2.3`), on the last
requested line (the newest), after the contract tests' guests have stopped.

Covered: init, sync with data verified by checksum (and snapshot guids), status in zrep's
format, `sync all`, expire, failover and takeover back, a sync whose stream is cut (the
standby's `zfs recv -s` killed) and then resumed from the receive_resume_token.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest

from producer.api import Producer
from producer.watch import wait
from tasks.app import make_app
from tests.harness.redis_server import RedisServer
from tests.harness.signing import signed
from tests.realzfs.e2e import (
    StorageHost,
    boot_pair,
    install_zrepq,
    start_worker,
    wait_registered,
    wheelhouse,
)
from tests.realzfs.guest import GuestError
from tests.realzfs.plugin import STATE

pytestmark = [pytest.mark.realzfs, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def redis_server_e2e(request: pytest.FixtureRequest) -> RedisServer:
    """The session's Redis, only once real OpenZFS was requested (else skip first)."""
    if not request.config.stash[STATE].real:
        pytest.skip("real OpenZFS not requested (--zfs=real-2.3 or ZREPQ_REALZFS=2.3)")
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


@pytest.fixture(scope="module")
def hosts(
    request: pytest.FixtureRequest, redis_server_e2e: RedisServer
) -> Iterator[list[StorageHost]]:
    redis_server = redis_server_e2e
    state = request.config.stash[STATE]
    label = state.real[-1]
    try:
        image = state.pool.image(label)
        guests = boot_pair(image)
    except Exception as e:
        pytest.fail(f"OpenZFS {label}: cannot boot two guests: {e}", pytrace=False)
    try:
        pyver = guests[0].ssh("python3 -c 'import platform; print(platform.python_version())'")
        wheels = wheelhouse(pyver.stdout.strip())
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            list(ex.map(lambda g: install_zrepq(g, wheels), guests))
        sites = [StorageHost(g, g.name, f"pool{i}") for i, g in enumerate(guests, 1)]
        for s in sites:
            s.sh(f"truncate -s 1G /var/tmp/vdev-{s.pool} && zpool create -f {s.pool} "
                 f"/var/tmp/vdev-{s.pool}")  # fmt: skip
        client = redis_server.client(socket_timeout=5)
        client.flushdb()
        for s in sites:
            start_worker(s, redis_server.port)
        wait_registered(client, sites)
        yield sites
    except GuestError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        for g in guests:
            g.stop()


@pytest.fixture(scope="module")
def producer(redis_server_e2e: RedisServer) -> Producer:
    return Producer(app=make_app(signed({"ZREPQ_BROKER_URL": redis_server_e2e.url})))


def done(r: Any, hosts: list[StorageHost], timeout: float = 600) -> dict[str, Any]:
    rec = wait({"t": r}, timeout=timeout, show=False)["t"]
    if not rec.get("ok"):
        logs = "\n".join(f"--- {h.name} ---\n{h.worker_log()}" for h in hosts)
        raise AssertionError(f"task failed: {rec}\n{logs}")
    return rec


def test_init_sync_and_checksums(hosts: list[StorageHost], producer: Producer) -> None:
    a, b = hosts
    src, dst = f"{a.pool}/prod", f"{b.pool}/prod"
    a.zfs("create", src)
    a.write_random(src, "one.bin", 4)
    a.sh(f"echo hello > $(zfs get -H -o value mountpoint {src})/hello.txt")
    rec = done(producer.init(src, b.name, dst, host=a.name), hosts)
    assert rec["result"]["dest_fs"] == dst
    assert b.checksums(dst) == a.checksums(src)
    assert b.get("readonly", dst) == "on"
    assert a.get("zrep:master", src) == "yes"

    a.write_random(src, "two.bin", 6)
    a.sh(f"rm $(zfs get -H -o value mountpoint {src})/hello.txt")
    rec = done(producer.sync(src, host=a.name), hosts)
    assert rec["result"]["status"] == "synced"
    snap = rec["result"]["snapshot"]
    assert b.checksums(dst) == a.checksums(src)
    short = snap.split("@", 1)[1]
    assert short in b.snapshots(dst)
    assert b.get("guid", f"{dst}@{short}") == a.get("guid", snap)

    rec = done(producer.status(a.name, [src], verbose=True), hosts)
    text = rec["result"]["text"]
    assert src in text and b.name in text, text


def test_sync_all_and_expire(hosts: list[StorageHost], producer: Producer) -> None:
    a, b = hosts
    src, dst = f"{a.pool}/second", f"{b.pool}/second"
    a.zfs("create", src)
    a.write_random(src, "s.bin", 2)
    done(producer.init(src, b.name, dst, host=a.name), hosts)
    for i in range(6):  # more syncs than zrep's default ZREP_SAVE_COUNT (5)
        a.write_random(src, f"more{i}.bin", 1)
        a.write_random(f"{a.pool}/prod", f"more{i}.bin", 1)
        rec = done(producer.sync_all([a.name])[a.name], hosts)
        summary = rec["result"]
        assert summary["failed"] == 0, summary
        assert {d["dataset"] for d in summary["datasets"]} == {src, f"{a.pool}/prod"}
    for s, d in ((src, dst), (f"{a.pool}/prod", f"{b.pool}/prod")):
        assert b.checksums(d) == a.checksums(s)
    done(producer.expire(src, host=a.name), hosts)
    left_a, left_b = a.snapshots(src), b.snapshots(dst)
    assert 1 <= len(left_a) <= 5 and 1 <= len(left_b) <= 5, (left_a, left_b)
    # the last sent snapshot survives expiry on both sides
    assert left_a[-1] in left_b


def test_failover_and_takeover_back(hosts: list[StorageHost], producer: Producer) -> None:
    a, b = hosts
    src, dst = f"{a.pool}/prod", f"{b.pool}/prod"
    done(producer.failover(src, host=a.name), hosts)
    assert b.get("zrep:master", dst) == "yes"
    assert a.get("zrep:master", src) != "yes"
    assert a.get("readonly", src) == "on"
    # the new master takes writes and syncs back the other way
    assert b.get("readonly", dst) == "off"
    b.write_random(dst, "from-b.bin", 2)
    rec = done(producer.sync(dst, host=b.name), hosts)
    assert rec["result"]["status"] == "synced"
    assert a.checksums(src) == b.checksums(dst)
    # and back: a takes over, b is the standby again
    done(producer.takeover(src, host=a.name), hosts)
    assert a.get("zrep:master", src) == "yes"
    assert b.get("zrep:master", dst) != "yes"
    a.write_random(src, "after.bin", 1)
    rec = done(producer.sync(src, host=a.name), hosts)
    assert rec["result"]["status"] == "synced"
    assert b.checksums(dst) == a.checksums(src)


def test_resumed_sync_after_stream_cut(hosts: list[StorageHost], producer: Producer) -> None:
    a, b = hosts
    src, dst = f"{a.pool}/prod", f"{b.pool}/prod"
    a.write_random(src, "big.bin", 40)  # ~6-8 MB/s between guests: several seconds of stream
    r = producer.sync(src, host=a.name, resume=True)
    # cut the stream: kill the standby's receiving `zfs recv -s`, by its pid, mid-way
    deadline = time.monotonic() + 300
    pid = ""
    while not pid and time.monotonic() < deadline and not r.ready():
        pid = b.guest.ssh(f"pgrep -f '^zfs recv.* -s .*{dst}' | head -1").stdout.strip()
        time.sleep(0.3)
    assert pid, f"no receive seen on {b.name}; task: {r.state} {r.info}"
    time.sleep(2)  # let part of the stream land first
    b.guest.ssh(f"kill -9 {pid}")
    first = wait({"t": r}, timeout=600, show=False)["t"]
    if first.get("ok"):  # the task itself resumed after the cut
        assert first["result"]["resumed"], first
    else:
        token = b.get("receive_resume_token", dst)
        assert token != "-", (first, token)
        rec = done(producer.sync(src, host=a.name, resume=True), hosts)
        assert rec["result"]["resumed"], rec
    assert b.get("receive_resume_token", dst) == "-"
    assert b.checksums(dst) == a.checksums(src)
