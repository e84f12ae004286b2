"""4. Lease latency and producer enqueue rate, on a loopback redis-server.

    python -m bench.lease [--quick|--smoke]

- lease: `RedisLocks.hold([key])` entered and left (SET NX PX, the renewal and watchdog
  threads started and stopped, the owner-checked release script), p50/p99 over N rounds;
  baseline: the two bare Redis round trips it cannot do without (SET NX PX, DEL).
- enqueue: `Producer.sync(fs, host=...)` for 10,000 distinct datasets (argument validation,
  host check, `send_task` onto the host's queue), wall time; baseline: Celery's own
  `app.send_task` with the same kwargs and queue, no zrepq code.
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
    """Where a lease's time goes: redis-py's Lock alone, and the per-lease renewal threads."""
    import threading

    from redis.lock import Lock

    from workers.lease import _Renewer

    def lock_only() -> None:
        lock = Lock(client, "zrepq:bench:parts", timeout=60, sleep=0.1, thread_local=False)
        lock.acquire(blocking=False, token="bench")
        lock.release()

    def threads_only() -> None:
        r = _Renewer([], 60.0, threading.Event(), "bench", time.monotonic())
        r.start()
        r.stop()

    out: dict[str, list[float]] = {}
    parts = (("redis-py Lock acquire+release", lock_only), ("renewal threads", threads_only))
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
    keys = [f"zrep:hosta:pool/fs{i:03d}" for i in range(100)]
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


def enqueue(url: str, n: int) -> tuple[float, float, float, float]:
    """(zrepq wall, zrepq CPU, celery wall, celery CPU) for n sync tasks."""
    import redis

    from producer.api import Producer
    from tasks import contract as c
    from tasks.app import make_app
    from workers.keys import HOSTS_KEY

    client = redis.Redis.from_url(url)
    client.hset(HOSTS_KEY, "hosta", json.dumps({"queue": c.queue_for("hosta"), "registered": 1}))
    app = make_app({"ZREPQ_BROKER_URL": url})
    producer = Producer(app=app)
    producer.sync("pool/warmup", host="hosta")  # connections, host list
    fss = [f"pool/fs{i:05d}" for i in range(n)]
    with metered() as mz:
        for fs in fss:
            producer.sync(fs, host="hosta")
    queued = client.llen(c.queue_for("hosta"))
    client.flushdb()
    client.hset(HOSTS_KEY, "hosta", json.dumps({"queue": c.queue_for("hosta"), "registered": 1}))
    # The same message body the producer sends.
    kwargs = c.validate(c.SYNC, {"host": "hosta", "fs": "pool/warmup"}).model_dump()
    queue = c.queue_for("hosta")
    with metered() as mc:
        for fs in fss:
            app.send_task(c.SYNC, kwargs={**kwargs, "fs": fs}, queue=queue, retry=False)
    if queued != n + 1 or client.llen(queue) != n:
        raise RuntimeError(f"{queued} messages queued, expected {n + 1}")
    client.flushdb()
    return mz.wall, mz.cpu, mc.wall, mc.cpu


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
        zw, zc, cw, cc = enqueue(server.url, p["tasks"])
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
    scaled = zw * 10_000 / n
    sec.row(
        f"producer enqueue, {n:,} sync tasks",
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
    sec.note(f"enqueue: CPU {zc:.1f} s for zrepq's producer, {cc:.1f} s for Celery's alone")
    return sec


if __name__ == "__main__":
    sys.exit(section_main(run))
