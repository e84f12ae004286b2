"""3. Scale: 10,000 datasets over 20 hosts in one queued `sync all` (issue 17's fleet).

    python -m bench.scale [--quick|--smoke]
    ZREPQ_SCALE_SIZE=20x100 python -m bench.scale   # another size: HOSTSxDATASETS_PER_HOST

Twenty storage hosts s00..s19 (ten and fewer datasets with --quick), each a stand-in zfs
state with 500 replicated pairs and its own real zrepq worker (a Celery worker process on
this machine, concurrency 2), all on one redis-server, with Flower watching. Each pair
replicates to the same host ("localhost" as destination, zrep's "remote host is us"), so no
sshd is needed and the machine's two cores go to the queue and the stand-in. 1% of the
datasets have new data.

One `zrepq sync all -c` (Producer.sync_all over the ten hosts, changed_only) fans out one
`zrep.sync` per dataset on each host's queue. Reported: total time from enqueue to the last
summary; whether every summary is right (each dataset once, the changed ones `synced`, the
rest `unchanged`, none failed); Redis memory (INFO memory, sampled every second); Flower's
`GET /api/tasks?limit=100` latency, timed every second during the run ("responsive": every
request answered, p95 under a second), and a full `/api/tasks` at the end; how long enqueueing
the fan-out took (the `sync_all` call to the last `zrep.sync` message queued, < 5 s); and
what Redis keeps after the run, by key family, with each family's TTL (results and chord
state must expire: a family without a TTL stays for ever).

`sync all -c` rather than a plain `sync all` keeps the run to a few minutes on two cores: the
unchanged datasets cost fewer zfs calls each, while the queue carries the same 10,000 tasks
and 20 summaries.

Setup is quick because one host's state is built (500 `init`s) and then copied for the
others (`clone_root`, as the contract tests do), with `zrep:src-host` set to each host's name.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    Lab,
    Section,
    fmt_ms,
    fmt_s,
    median,
    metered,
    missing_tools,
    parallel,
    percentile,
    section_main,
    start_workers,
)

PARAMS = {
    "full": {"hosts": 20, "per_host": 500, "changed": 5},
    "quick": {"hosts": 10, "per_host": 20, "changed": 1},
    "smoke": {"hosts": 2, "per_host": 3, "changed": 1},
}
FLOWER_BAR = 1.0  # seconds, p95: "still responsive" (one request a second, no failures)
POOL = "tank"


def _build_template(root: Path, per_host: int) -> list[str]:
    """Host s00 with `per_host` pairs tank/src/dNNN -> localhost:tank/dst/dNNN."""
    from tests.harness.standin import StandinHost
    from workers.engine import Context, EngineConfig, run
    from workers.engine.requests import InitRequest
    from workers.exec.transport import SshTransport

    host = StandinHost(root, "s00")
    host.create_pool(POOL)
    host.zfs("create", f"{POOL}/src")
    host.zfs("create", f"{POOL}/dst")
    names = [f"d{i:03d}" for i in range(per_host)]
    for leaf in names:
        host.zfs("create", f"{POOL}/src/{leaf}")
        host.write(f"{POOL}/src/{leaf}", "f.txt", f"{leaf}\n".encode())
    transport = SshTransport("s00", local_env=host.env)
    rundir = root / "run"  # zrep's global lock: this host's own, as on a real one
    rundir.mkdir(exist_ok=True)
    ctx = Context(transport, EngineConfig.from_env({"ZREP_RUNDIR": str(rundir)}))
    try:
        parallel(
            [
                lambda leaf=leaf: run(
                    ctx,
                    InitRequest(
                        fs=f"{POOL}/src/{leaf}", dest_host="localhost", dest_fs=f"{POOL}/dst/{leaf}"
                    ),
                )
                for leaf in names
            ]
        )
    finally:
        transport.close()
    return names


class Watch:
    """Samples Redis memory and Flower's latency once a second until stopped."""

    def __init__(self, redis_client: Any, flower_url: str) -> None:
        self.client = redis_client
        self.url = flower_url
        self.flower: list[float] = []
        self.flower_errors: list[str] = []
        self.memory: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.memory.append(int(self.client.info("memory")["used_memory"]))
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.url}/api/tasks?limit=100", timeout=30) as r:
                    json.loads(r.read())
                self.flower.append(time.perf_counter() - t0)
            except OSError as e:
                self.flower_errors.append(str(e))


def run(mode: str) -> Section:
    sec = Section("3")
    why = missing_tools("redis")
    if why:
        sec.skipped = why
        return sec
    p = PARAMS[mode]
    nhosts, per_host, changed = p["hosts"], p["per_host"], p["changed"]
    size = os.environ.get("ZREPQ_SCALE_SIZE")  # HOSTSxPER_HOST, e.g. 20x100: a smaller fleet
    if size:
        nhosts, per_host = (int(n) for n in size.lower().split("x"))
        changed = max(1, per_host // 100)
    total = nhosts * per_host
    from producer.api import Producer
    from producer.watch import wait
    from tasks.app import make_app
    from tests.harness.services import start_flower, worker_env
    from tests.harness.signing import signed
    from tests.harness.standin import StandinHost, standin_env
    from tests.harness.standin_fixtures import clone_root

    hosts = [f"s{i:02d}" for i in range(nhosts)]
    with Lab("scale") as lab:
        print(f"[3] scale: {total} datasets on {nhosts} hosts", flush=True)
        t_setup = time.monotonic()
        template = lab.base / "template"
        names = _build_template(template, per_host)
        zhosts: dict[str, Any] = {}
        for h in hosts:
            root = lab.base / "hosts" / h
            root.parent.mkdir(exist_ok=True)
            clone_root(template, root)
            z = StandinHost(root, h)
            if h != "s00":
                everything = [f"{POOL}/{side}/{leaf}" for side in ("src", "dst") for leaf in names]
                z.zfs("set", f"zrep:src-host={h}", *everything)
            for leaf in names[:changed]:
                z.write(f"{POOL}/src/{leaf}", "new.txt", f"{h} {leaf} changed\n".encode())
            zhosts[h] = z
        redis = lab.redis()
        client = redis.client()
        flower = lab.service(start_flower(redis.url, lab.logs))
        flower_url = f"http://127.0.0.1:{flower.port}"

        # Each host's own zrep global lock (`ZREP_RUNDIR`): one file for all twenty would make
        # every lock-mark claim on this machine queue behind every other (a storage host has
        # its own /var/run), and stall anything else here that takes it.
        envs = {}
        for h in hosts:
            rundir = zhosts[h].root / "run"
            rundir.mkdir(exist_ok=True)
            site = standin_env(zhosts[h].root)
            envs[h] = worker_env(h, redis.url, site, None, ZREP_RUNDIR=str(rundir))
        for svc in start_workers(envs, lab.logs):
            lab.service(svc)
        mem_before = int(client.info("memory")["used_memory"])
        sec.note(
            f"scale: set up {total} pairs and {nhosts} workers in "
            f"{fmt_s(time.monotonic() - t_setup)}"
        )
        producer = Producer(app=make_app(signed({"ZREPQ_BROKER_URL": redis.url})))
        print(f"[3] sync all -c over {nhosts} hosts", flush=True)
        with Watch(client, flower_url) as watch, metered() as m:
            results = producer.sync_all(hosts, changed_only=True)
            fanned = _wait_fanned_out(client, total, timeout=600)
            recs = wait(results, timeout=3600, show=False, poll=0.2)
        info = client.info("memory")
        keys = client.dbsize()
        families = _key_families(client)
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{flower_url}/api/tasks", timeout=120) as r:
            flower_tasks = json.loads(r.read())
        full_list = time.perf_counter() - t0

    # -- check the summaries ------------------------------------------------------------------
    problems = []
    seen = 0
    for h in hosts:
        rec = recs.get(h, {})
        res = rec.get("result") or {}
        want = {"synced": changed, "unchanged": per_host - changed}
        want = {k: v for k, v in want.items() if v}
        if not rec.get("ok") or res.get("counts") != want or res.get("failed"):
            problems.append(f"{h}: {res.get('counts') or rec.get('error')}")
        rows = res.get("datasets") or []
        seen += len({r["dataset"] for r in rows})
    correct = not problems and seen == total
    synced = nhosts * changed
    sec.row(
        f"scale: {total:,} datasets on {nhosts} hosts ({nhosts} workers, c=2), one queued "
        f"`sync all -c`, {synced} changed",
        f"{fmt_s(m.wall)} ({total / m.wall:.1f} datasets/s)",
        "",
        f"{seen}/{total} in the summaries, "
        + ("all correct" if correct else "WRONG: " + "; ".join(problems[:3])),
        "summary correct",
        correct,
    )
    peak = max([*watch.memory, int(info["used_memory"])])
    sec.row(
        "scale: Redis memory (INFO used_memory)",
        f"peak {peak / (1 << 20):.1f} MiB during the run, {info['used_memory_human']} after",
        f"{mem_before / (1 << 20):.1f} MiB before",
        f"{keys:,} keys after",
        "",
        None,
    )
    lat = watch.flower or [float("nan")]
    p95 = percentile(lat, 95)
    ok_flower = bool(watch.flower) and not watch.flower_errors and p95 < FLOWER_BAR
    sec.row(
        "scale: Flower responsive during the run, `GET /api/tasks?limit=100` once a second",
        f"median {fmt_ms(median(lat))}, p95 {fmt_ms(p95)}, max {fmt_ms(max(lat))} "
        f"({len(watch.flower)} requests, {len(watch.flower_errors)} failed)",
        "",
        f"full list of {len(flower_tasks):,} tasks after: {fmt_ms(full_list)}",
        f"all answered, p95 < {FLOWER_BAR:.0f} s",
        ok_flower,
    )
    sec.row(
        f"scale: enqueueing the fan-out ({total:,} `zrep.sync` from {nhosts} `zrep.sync_all`)",
        f"{fmt_s(fanned)}" if fanned is not None else "not seen",
        "",
        "from `sync_all` to the last `zrep.sync` message queued or taken",
        "< 5 s",
        fanned is not None and fanned < 5.0,
    )
    sec.note(
        "scale: Redis keys after the run, by family (count; TTL min-max s, -1 = none; size): "
        + "; ".join(
            f"{fam} {n} ({lo}-{hi}; {size / (1 << 20):.2f} MiB)"
            for fam, (n, lo, hi, size) in sorted(families.items())
        )
    )
    sec.note(
        f"scale: CPU {m.cpu:.0f} s ({m.cpu / m.wall:.2f} cores) by zrepq, Redis, Flower and the "
        f"stand-in; other processes {m.others_cores:.2f} cores; Redis peak "
        f"{info.get('used_memory_peak_human')}"
    )
    return sec


def _wait_fanned_out(client: Any, total: int, timeout: float) -> float | None:
    """Seconds from now until `total` `zrep.sync` tasks were published (the brokers' queues
    plus what the workers took, counted from Celery's `task-sent`-independent view: the
    queue lengths, the messages taken and not yet acked, and the datasets done, one field
    each in the hosts' `zrepq:syncs:HOST`: a member stores no result); None when not seen
    within `timeout`."""
    from tasks.contract import syncs_key
    from tasks.registry import registered

    records = [syncs_key(host) for host in registered(client)]  # one HLEN per host and poll
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        queued = 0
        for key in client.scan_iter("zrepq.host.*", count=1000):
            if client.type(key) in (b"list", "list"):
                queued += int(client.llen(key))
        done = sum(int(client.hlen(key)) for key in records)
        unacked = int(client.hlen("unacked")) if client.exists("unacked") else 0
        if queued + done + unacked >= total:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def _key_families(client: Any) -> dict[str, tuple[int, int, int, int]]:
    """Every key left in Redis, grouped by its name up to the first id-like part: count,
    lowest and highest TTL (seconds; -1: never expires), and bytes (`MEMORY USAGE`, which
    counts Redis' own overhead per key)."""
    import re

    fams: dict[str, list[tuple[int, int]]] = {}
    for key in client.scan_iter(count=5000):
        name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        fam = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27,}.*|[0-9]{3,}.*", "*", name)
        size = int(client.memory_usage(key, samples=0) or 0)
        fams.setdefault(fam, []).append((int(client.ttl(key)), size))
    return {
        f: (len(v), min(t for t, _ in v), max(t for t, _ in v), sum(b for _, b in v))
        for f, v in fams.items()
    }


if __name__ == "__main__":
    sys.exit(section_main(run))
