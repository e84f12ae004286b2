"""4. Lease latency and producer enqueue rate, on a loopback redis-server.

    python -m bench.lease [--quick|--smoke]

- lease: `RedisLocks.hold([key])` entered and left (the acquire script by EVALSHA: GET, SET
  PX; the lease registered with and unregistered from the renewal and watchdog threads, the
  owner-checked release script), p50/p99 over N rounds;
  baseline: the two bare Redis round trips it cannot do without (SET NX PX, DEL).
- enqueue: `Producer.sync(fs, host=...)` for 10,000 distinct datasets (argument validation,
  host check, `send_task` onto the host's queue) inside one `Producer.batch()`, wall time;
  also one call at a time (a detail); baseline: Celery's own `app.send_task` with the same
  kwargs and queue, no zrepq code.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.common import (
    Lab,
    Section,
    fmt_s,
    median,
    metered,
    missing_tools,
    percentile,
    section_main,
)

PARAMS = {
    "full": {"leases": 5000, "tasks": 10_000},
    "quick": {"leases": 2000, "tasks": 10_000},
    "smoke": {"leases": 200, "tasks": 300},
}
LEASE_P99_TARGET = 0.002
ENQUEUE_TARGET = 3.0  # seconds for 10,000 tasks


def lease_parts(client: Any, n: int) -> dict[str, list[float]]:
    """Where a lease's time goes: the acquire script and redis-py's owner-checked release
    alone, and registering the lease with the renewal and watchdog threads (and
    unregistering it)."""
    import threading

    from redis.lock import Lock

    from workers.lease import _ACQUIRE
    from workers.renewal import Renewer

    acquire = client.register_script(_ACQUIRE)
    key = "zrepq:bench:parts"

    def lock_only() -> None:
        acquire(keys=[key], args=["bench", 60_000, ""])
        lock = Lock(client, key, timeout=60, thread_local=False)
        lock.local.token = b"bench"
        lock.release()

    renewer = Renewer(60.0, "bench")

    def renewal_only() -> None:
        held = renewer.held("bench", [], threading.Event(), "bench", time.monotonic())
        renewer.add(held)
        renewer.remove(held)

    out: dict[str, list[float]] = {}
    parts = (
        ("acquire script + release", lock_only),
        ("renewal register+unregister", renewal_only),
    )
    for name, fn in parts:
        xs = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            xs.append(time.perf_counter() - t0)
        out[name] = xs
    return out


def lease_latency(client: Any, n: int) -> tuple[list[float], list[float]]:
    from workers.lease import RedisLocks

    locks = RedisLocks(client, owner="bench", ttl=60)
    keys = [f"hosta:zrep:pool/fs{i:03d}" for i in range(100)]
    for key in keys[:20]:  # warm up: connection, Lua script cache
        with locks.hold([key], operation="warmup"):
            pass
    lease, raw = [], []
    for i in range(n):
        key = keys[i % len(keys)]
        t0 = time.perf_counter()
        with locks.hold([key], operation="sync"):
            pass
        lease.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.set(f"raw:{key}", "token", nx=True, px=60_000)
        client.delete(f"raw:{key}")
        raw.append(time.perf_counter() - t0)
    return lease, raw


def enqueue(url: str, n: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) for n sync tasks: zrepq's producer in a batch and one call at a time,
    and Celery's own `send_task`."""
    import redis

    from producer.api import Producer
    from tasks import contract as c
    from tasks.app import make_app
    from tests.harness.signing import signed
    from workers.keys import host_key

    client = redis.Redis.from_url(url)
    queue = c.queue_for("hosta")

    def reset() -> None:
        client.flushdb()
        client.set(host_key("hosta"), json.dumps({"queue": queue, "registered": 1}))

    def check(what: str) -> None:
        queued = client.llen(queue)
        if queued != n:
            raise RuntimeError(f"{what}: {queued} messages queued, expected {n}")
        reset()

    reset()
    app = make_app(signed({"ZREPQ_BROKER_URL": url}))
    producer = Producer(app=app)
    producer.sync("pool/warmup", host="hosta")  # connections, host list
    with producer.batch():
        producer.sync("pool/warmup", host="hosta")
    reset()
    fss = [f"pool/fs{i:05d}" for i in range(n)]
    out: dict[str, tuple[float, float]] = {}
    with metered() as m, producer.batch():
        for fs in fss:
            producer.sync(fs, host="hosta")
    out["batch"] = (m.wall, m.cpu)
    check("zrepq batch")
    with metered() as m:
        for fs in fss:
            producer.sync(fs, host="hosta")
    out["single"] = (m.wall, m.cpu)
    check("zrepq one at a time")
    # The same message body the producer sends.
    kwargs = c.validate(c.SYNC, {"host": "hosta", "fs": "pool/warmup"}).model_dump()
    with metered() as m:
        for fs in fss:
            app.send_task(c.SYNC, kwargs={**kwargs, "fs": fs}, queue=queue, retry=False)
    out["celery"] = (m.wall, m.cpu)
    check("celery send_task")
    client.flushdb()
    return out


def run(mode: str) -> Section:
    sec = Section("4")
    why = missing_tools("redis")
    if why:
        sec.skipped = why
        return sec
    p = PARAMS[mode]
    with Lab("lease") as lab:
        server = lab.redis()
        client = server.client(socket_timeout=5)
        print(f"[4] lease acquire+release x{p['leases']}", flush=True)
        lease, raw = lease_latency(client, p["leases"])
        parts = lease_parts(client, p["leases"])
        print(f"[4] producer enqueue x{p['tasks']}", flush=True)
        enq = enqueue(server.url, p["tasks"])
    p99 = percentile(lease, 99)
    sec.row(
        f"lease acquire + release on loopback Redis, {len(lease)} rounds: p50 / p99",
        f"{median(lease) * 1000:.2f} / {p99 * 1000:.2f} ms",
        f"bare SET NX + DEL: {median(raw) * 1000:.2f} / {percentile(raw, 99) * 1000:.2f} ms",
        f"p99 {p99 * 1000:.2f} ms",
        f"p99 <= {LEASE_P99_TARGET * 1000:.0f} ms",
        p99 <= LEASE_P99_TARGET,
    )
    n = p["tasks"]
    zw, zc = enq["batch"]
    sw, sc = enq["single"]
    cw, cc = enq["celery"]
    scaled = zw * 10_000 / n
    sec.row(
        f"producer enqueue, {n:,} sync tasks (`Producer.batch`)",
        f"{fmt_s(zw)} ({n / zw:,.0f}/s)",
        f"Celery send_task: {fmt_s(cw)} ({n / cw:,.0f}/s)",
        f"{fmt_s(scaled)} per 10,000",
        f"<= {ENQUEUE_TARGET:.0f} s per 10,000",
        scaled <= ENQUEUE_TARGET,
    )
    sec.note(
        f"lease: max {max(lease) * 1000:.2f} ms, p90 {percentile(lease, 90) * 1000:.2f} ms; its "
        "parts, p50 / p99: "
        + "; ".join(
            f"{k} {median(v) * 1000:.2f} / {percentile(v, 99) * 1000:.2f} ms"
            for k, v in parts.items()
        )
    )
    sec.note(
        f"enqueue: CPU {zc:.1f} s for zrepq's producer in a batch; one `Producer.sync` at a "
        f"time {fmt_s(sw)} ({sc:.1f} CPU s); Celery's send_task alone {cc:.1f} CPU s"
    )
    return sec


if __name__ == "__main__":
    sys.exit(section_main(run))
