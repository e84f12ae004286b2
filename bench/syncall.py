"""2. Sync all: N unchanged datasets, zrepq and every peer, side by side in one run.

    python -m bench.syncall [--quick|--smoke]

Each contender gets its own pair of stand-in hosts with N datasets SRCPOOL/data/dNNN ->
DSTPOOL/data/dNNN: the source is this machine (stand-in zfs), the target a real sshd. Nothing
changes between syncs, so each sync is all control: read both sides, snapshot, an empty
incremental, holds, and the expiry of one old snapshot per side (every tool keeps one: zrepq
`savecount` 1, syncoid's own rule, zfs-autobackup `--keep-source=1 --keep-target=1`; the
destroys are counted in the call logs and reported). Pairs are set up by each tool itself
(zrepq init, the tools' first runs) at zero delay; then every zfs call on both hosts of
every pair sleeps ZFS_STANDIN_DELAY (30 ms) first, like a real pool's latency.

Contenders, each timed from the command's start to its end:
- zrepq, queued: `zrepq --wait sync --host hosta all` (the CLI, a new process) with one
  worker for hosta already running (concurrency 4, and 8), to the CLI's summary;
- zrepq-local: `zrepq-local sync all` (the engine in the CLI's process, serial);
- zrepq's engine in a serial loop: `for fs in masters(ctx): run(ctx, SyncRequest(fs=fs))` in this
  process (no CLI start, no queue): the engine's own floor, not a measurement of zrep;
- syncoid per dataset (a cron loop of `syncoid SRC root@HOST:DST`) and syncoid
  `--recursive --skip-parent` over the parent, at the settings in bench/peers.py;
- zfs-autobackup at the settings in bench/peers.py, with its holds and guid checks, and its
  fastest documented run (`--no-holds --no-guid-check`, which give both up);
- upstream zrep 2.0.2 is not installable from any registry here: issue 17's own measurement
  under the same conditions (3.5 s per dataset, ~41 zfs calls, 5 ssh connections) is quoted
  as a reference, marked as not measured in this run.

Per contender: wall time, per dataset; zfs and zpool calls per dataset (the stand-in's call
logs, both hosts); snapshots destroyed per side; ssh connections accepted by the target's
sshd and commands (sessions) run there; CPU of every process involved (the peers run under
bench/reaper.py so their detached ssh masters are counted too). After each run the newest
snapshot of every dataset is checked on the target (same guid).

The queued run's worker is `bench/timed_worker.py`, which also logs each `zrep.sync`'s slot
and the wall time inside zfs commands: the per-slot overhead beyond the zfs calls is a detail.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import calltime, peers
from bench.common import (
    Lab,
    Section,
    children_cpu,
    fmt_ms,
    fmt_s,
    median,
    metered,
    missing_tools,
    own_cpu,
    parallel,
    percentile,
    section_main,
    start_timed_worker,
)

PARAMS = {
    "full": {"n": 200, "delay": 0.03, "concurrency": (4, 8)},
    "quick": {"n": 40, "delay": 0.03, "concurrency": (4, 8)},
    "smoke": {"n": 3, "delay": 0.03, "concurrency": (4,)},
}
PER_DATASET_TARGET = 0.3  # s per dataset at concurrency 4 (issue 17)
SPEEDUP_TARGET = 3.5  # over zrepq's engine in a serial loop, at concurrency 4
ZREP = {"per_ds": 3.5, "calls": 41, "connections": 5}  # issue 17: zrep 2.0.2, not run here
ZREP_TARGET = 10.0  # issue 17: >= 10x zrep's figure


@dataclass
class Result:
    key: str
    label: str
    settings: str
    wall: float
    cpu: float
    others: float  # cores used by other processes meanwhile
    cost: peers.Cost
    n: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_ds(self) -> float:
        return self.wall / self.n


def per_dataset(records: list[dict[str, Any]], delay: float) -> dict[str, list[float]]:
    """Slots, and overheads beyond measured zfs time and beyond calls x delay, per dataset."""
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_pid[r["pid"]].append(r)
    out: dict[str, list[float]] = {
        k: [] for k in ("slot", "overhead", "literal", "calls", "gap", "intask")
    }
    for recs in by_pid.values():
        recs.sort(key=lambda r: r["end"])
        prev_end = None
        for r in recs:
            slot = r["end"] - (prev_end if prev_end is not None else r["start"])
            if prev_end is not None:
                out["gap"].append(r["start"] - prev_end)  # between tasks: queue, dispatch
            out["intask"].append(r["end"] - r["start"] - r["zfs_s"])  # engine, lease, events
            prev_end = r["end"]
            calls = r["commands"] + r["streams"]
            out["slot"].append(slot)
            out["overhead"].append(slot - r["zfs_s"])
            out["literal"].append(slot - calls * delay)
            out["calls"].append(calls)
    return out


def _calibrate(host: Any, fs: str, n: int = 15) -> float:
    """The stand-in's own wall time for one `zfs get` at zero delay (process start included)."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        host.zfs("get", "-H", "-p", "-o", "property,value,source", "all", fs)
        samples.append(time.perf_counter() - t0)
    return median(samples)


def spawn_cost(n: int = 40) -> dict[str, float]:
    """Median wall time of `LocalRunner.run(["true"])` from this (worker-sized) process, with
    the child's parent-death signal set by `setpriv` (vfork) and by a `preexec_fn` (fork)."""
    from workers.exec import procs
    from workers.exec.local import LocalRunner

    runner = LocalRunner("hosta")
    out: dict[str, float] = {}
    real = procs._setpriv
    try:
        for label, impl in (("setpriv", real), ("preexec_fn", lambda: None)):
            procs._setpriv = impl  # type: ignore[assignment]
            if label == "setpriv" and real() is None:
                continue
            xs = []
            for _ in range(n):
                t0 = time.perf_counter()
                runner.run(["true"])
                xs.append(time.perf_counter() - t0)
            out[label] = median(xs)
    finally:
        procs._setpriv = real  # type: ignore[assignment]
    return out


class Pair:
    """One contender's hosts: the source here (stand-in), the target behind its own sshd."""

    def __init__(self, lab: Lab, cluster: Any, src_name: str, dst_name: str, pa: str, pb: str):
        from tests.harness.standin import StandinHost

        self.cluster = cluster
        self.sshd = cluster.host(dst_name)
        self.a = StandinHost(lab.base / src_name, src_name)
        self.b = StandinHost(self.sshd.root, dst_name)
        self.src_name, self.dst_name = src_name, dst_name
        self.pa, self.pb = pa, pb
        self.src_parent, self.dst_parent = f"{pa}/data", f"{pb}/data"
        self.a.create_pool(pa)
        self.b.create_pool(pb)

    def make_sources(self, names: list[str], src_props: tuple[str, ...] = ()) -> None:
        self.a.zfs("create", *src_props, self.src_parent)
        for leaf in names:
            fs = f"{self.src_parent}/{leaf}"
            self.a.zfs("create", fs)
            self.a.write(fs, "f.txt", f"{leaf}\n".encode())
        self.b.zfs("create", self.dst_parent)

    def env(self, delay: float) -> dict[str, str]:
        env = dict(self.a.env)
        if delay:
            env["ZFS_STANDIN_DELAY"] = str(delay)
        return env

    def set_delay(self, delay: float) -> None:
        """From here on every zfs call on the target sleeps `delay` first (sshd restarted
        with it in every session's environment)."""
        self.sshd.env["ZFS_STANDIN_DELAY"] = str(delay)
        self.cluster.stop(self.dst_name)
        self.cluster.start(self.dst_name)

    def tally(self) -> Any:
        return peers.tally(self.a.root, self.b.root, self.sshd.log)

    def check(self, n: int, counts_before: tuple[dict[str, int], dict[str, int]]) -> None:
        """Every dataset's newest snapshot on the target, and as many snapshots per side as
        before the run (one made, one expired)."""
        problem = peers.check_replicated(self.a, self.b, self.src_parent, self.dst_parent, n)
        if problem:
            raise RuntimeError(f"{self.src_name} -> {self.dst_name}: {problem}")
        after = self.counts()
        if after != counts_before:
            raise RuntimeError(
                f"{self.src_name} -> {self.dst_name}: snapshot counts changed in the run "
                f"(before {counts_before}, after {after})"
            )

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        return peers.snapshot_counts(self.a, self.src_parent), peers.snapshot_counts(
            self.b, self.dst_parent
        )


def wait_next_second() -> None:
    """syncoid and zfs-autobackup name snapshots by the second: never two runs in one."""
    time.sleep(1.05 - (time.time() % 1.0))


def run(mode: str) -> Section:
    sec = Section("2")
    why = missing_tools("sshd", "redis") or peers.missing()
    if why:
        sec.skipped = why
        return sec
    p = PARAMS[mode]
    n, delay = p["n"], p["delay"]
    from tests.harness.services import worker_env
    from tests.harness.signing import signed
    from tests.harness.standin import standin_env
    from workers.engine import Context, EngineConfig
    from workers.engine import run as run_verb
    from workers.engine.report import masters
    from workers.engine.requests import InitRequest, SyncRequest
    from workers.exec.transport import SshTransport

    results: dict[str, Result] = {}
    with Lab("syncall") as lab:
        cluster = lab.cluster()
        names = [f"d{i:03d}" for i in range(n)]
        zq = Pair(lab, cluster, "hosta", "hostb", "zqa", "zqb")
        so = Pair(lab, cluster, "soa", "sob", "soa", "sob")
        zb = Pair(lab, cluster, "zaba", "zabb", "zaba", "zabb")
        zf = Pair(lab, cluster, "zfa", "zfb", "zfa", "zfb")
        print(f"[2] sync all: setting up {n} pairs for each contender", flush=True)
        t_setup = time.monotonic()
        for pair in (zq, so):
            pair.make_sources(names)
        for pair in (zb, zf):
            pair.make_sources(names, ("-o", f"autobackup:{peers.ZAB_NAME}=child"))
        # zrepq: init at savecount 1, so that each later sync expires one snapshot per side
        config = EngineConfig.from_env({"ZREP_SAVE_COUNT": "1"})
        setup_t = SshTransport("hosta", zq.sshd.ssh_options(), local_env=zq.a.env)
        lab.callback(setup_t.close)
        setup = Context(setup_t, config)
        parallel(
            [
                lambda leaf=leaf: run_verb(
                    setup,
                    InitRequest(
                        fs=f"{zq.src_parent}/{leaf}",
                        dest_host="hostb",
                        dest_fs=f"{zq.dst_parent}/{leaf}",
                    ),
                )
                for leaf in names
            ]
        )
        setup_t.close()
        # the peers: their first run, a full send of each dataset
        so_args = (so.src_parent, so.dst_parent, "--recursive", "--skip-parent")
        res = peers.run_reaped(peers.syncoid_argv(cluster.config_file, "sob", *so_args), so.env(0))
        _require(res, "syncoid's first run")
        zab_cfg = {
            key: peers.zab_ssh_config(
                cluster.config_file, lab.base / f"ssh_config-{key}", lab.base / f"cm-{key}"
            )
            for key in ("zab", "zabf")
        }
        for key, pair, extra in (("zab", zb, ()), ("zabf", zf, peers.ZAB_FASTEST)):
            argv = peers.zab_argv(zab_cfg[key], pair.dst_name, pair.dst_parent, *extra)
            after = peers.zab_close(zab_cfg[key], pair.dst_name)
            _require(peers.run_reaped(argv, pair.env(0), after=after), f"{key}'s first run")
        own_cost = _calibrate(zq.a, f"{zq.src_parent}/d000")
        spawn = spawn_cost()
        sec.note(
            f"sync all: set up {n} pairs for each of 4 pairs of hosts in "
            f"{fmt_s(time.monotonic() - t_setup)}; one stand-in `zfs get` takes "
            f"{fmt_ms(own_cost)} at zero delay (process start, state read)"
        )
        for pair in (zq, so, zb, zf):
            pair.set_delay(delay)

        # -- zrepq through the queue: the CLI, workers already running -----------------------
        redis = lab.redis()
        zrepq_bin = Path(sys.executable).parent
        cli_env = signed({**os.environ, "ZREPQ_BROKER_URL": redis.url, "ZREPQ_CONFIG": "none"})
        slot_stats: dict[int, dict[str, list[float]]] = {}
        worker_recs: dict[int, list[dict[str, Any]]] = {}

        def queued(conc: int) -> Result:
            log = lab.base / f"calltime-c{conc}.jsonl"
            env = worker_env(
                "hosta",
                redis.url,
                standin_env(zq.a.root),
                str(cluster.config_file),
                ZREPQ_CONCURRENCY=str(conc),
                ZREPQ_BENCH_CALLTIME=str(log),
                ZFS_STANDIN_DELAY=str(delay),
                ZREPQ_CONFIG="none",
                **(
                    {"ZREPQ_BENCH_PROFILE": os.environ["ZREPQ_BENCH_PROFILE"] + f".c{conc}"}
                    if os.environ.get("ZREPQ_BENCH_PROFILE")
                    else {}
                ),
            )
            worker = start_timed_worker("hosta", env, lab.logs)
            argv = [str(zrepq_bin / "zrepq"), "--wait", "sync", "--host", "hosta", "all"]
            try:
                before = zq.counts()
                print(f"[2] zrepq sync all --wait, concurrency {conc}", flush=True)
                with metered() as m, zq.tally() as cost:
                    res = _run(argv, cli_env)
            finally:
                worker.stop()
            _require(res, f"zrepq sync all at concurrency {conc}")
            if f"hosta: {n} synced;" not in res.stdout:
                raise RuntimeError(f"zrepq sync all at c={conc}: summary {res.stdout[-2000:]!r}")
            zq.check(n, before)
            recs = [json.loads(line) for line in Path(log).read_text().splitlines()]
            worker_recs[conc] = recs
            slot_stats[conc] = per_dataset(recs, delay)
            return Result(
                f"queue-c{conc}",
                f"zrepq sync all --wait, 1 worker, concurrency {conc}",
                "worker running before the clock; the CLI's start to its summary",
                m.wall, m.cpu, m.others_cores, cost, n,
            )  # fmt: skip

        def local_cli() -> Result:
            env = {
                **zq.env(delay),
                "ZREPQ_SSH_CONFIG": str(cluster.config_file),
                "ZREPQ_HOST": "hosta",
                "ZREPQ_CONFIG": "none",
                "ZREPQ_LOCK_DIR": str(lab.base / "locks"),
                "ZREP_RUNDIR": str(lab.base / "run"),
            }
            (lab.base / "run").mkdir(exist_ok=True)
            before = zq.counts()
            print("[2] zrepq-local sync all", flush=True)
            with metered() as m, zq.tally() as cost:
                res = _run([str(zrepq_bin / "zrepq-local"), "sync", "all"], env)
            _require(res, "zrepq-local sync all")
            zq.check(n, before)
            return Result(
                "local", "zrepq-local sync all", "serial, in the CLI's process",
                m.wall, m.cpu, m.others_cores, cost, n,
            )  # fmt: skip

        serial_recs: list[dict[str, Any]] = []

        def serial_loop() -> Result:
            calltime.install()
            transport = SshTransport("hosta", zq.sshd.ssh_options(), local_env=zq.env(delay))
            lab.callback(transport.close)
            ctx = Context(transport, config)
            before = zq.counts()
            print(f"[2] zrepq's engine in a serial loop over {n} datasets", flush=True)
            with metered() as m, zq.tally() as cost:
                for fs in masters(ctx):
                    calltime.start()
                    t0 = time.time()
                    s0, k0 = own_cpu(), children_cpu()
                    r = run_verb(ctx, SyncRequest(fs=fs))
                    acc = calltime.stop()
                    if r.status != "synced":
                        raise RuntimeError(f"serial sync of {fs}: {r}")
                    serial_recs.append(
                        {"pid": os.getpid(), "start": t0, "end": time.time(), **acc.to_dict(),
                         "cpu_self": own_cpu() - s0, "cpu_children": children_cpu() - k0}
                    )  # fmt: skip
            transport.close()
            zq.check(n, before)
            return Result(
                "serial", "zrepq's engine in a serial loop",
                "one process, no CLI start, no queue (the engine's floor; not zrep)",
                m.wall, m.cpu, m.others_cores, cost, n,
            )  # fmt: skip

        def syncoid_each() -> Result:
            script = lab.base / "syncoid-each.sh"
            lines = ["#!/bin/sh", "# a cron job: one syncoid per dataset"]
            for leaf in names:
                argv = peers.syncoid_argv(
                    cluster.config_file, "sob", f"{so.src_parent}/{leaf}",
                    f"{so.dst_parent}/{leaf}",
                )  # fmt: skip
                lines.append(f"{shlex.join(argv)} || echo 'FAILED {leaf}'")
            script.write_text("\n".join(lines) + "\n")
            before = so.counts()
            wait_next_second()
            print("[2] syncoid, one run per dataset", flush=True)
            with metered() as m, so.tally() as cost:
                res = peers.run_reaped(["sh", str(script)], so.env(delay))
            _require(res, "syncoid per dataset", fail_text="FAILED")
            so.check(n, before)
            return Result(
                "syncoid-each", "syncoid, one run per dataset",
                " ".join(peers.SYNCOID_OPTIONS) + " (mbuffer both sides)",
                m.wall, m.cpu, m.others_cores, cost, n,
            )  # fmt: skip

        def syncoid_recursive() -> Result:
            before = so.counts()
            wait_next_second()
            print("[2] syncoid --recursive --skip-parent", flush=True)
            argv = peers.syncoid_argv(cluster.config_file, "sob", *so_args)
            with metered() as m, so.tally() as cost:
                res = peers.run_reaped(argv, so.env(delay))
            _require(res, "syncoid --recursive")
            so.check(n, before)
            return Result(
                "syncoid-r", "syncoid --recursive --skip-parent, one run",
                " ".join(peers.SYNCOID_OPTIONS) + " (mbuffer both sides)",
                m.wall, m.cpu, m.others_cores, cost, n,
            )  # fmt: skip

        def zab(key: str, pair: Pair, extra: tuple[str, ...], label: str) -> Result:
            argv = peers.zab_argv(zab_cfg[key], pair.dst_name, pair.dst_parent, *extra)
            before = pair.counts()
            wait_next_second()
            print(f"[2] {label}", flush=True)
            with metered() as m, pair.tally() as cost:
                res = peers.run_reaped(
                    argv, pair.env(delay), after=peers.zab_close(zab_cfg[key], pair.dst_name)
                )
            _require(res, label)
            pair.check(n, before)
            return Result(
                key, label, " ".join((*peers.ZAB_OPTIONS, *extra)) + ", ssh ControlMaster",
                m.wall, m.cpu, m.others_cores, cost, n,
            )  # fmt: skip

        concs = list(p["concurrency"])
        # Mixed order: a drift in the machine's load falls on zrepq and on the peers alike.
        plan: list[Any] = [
            lambda: queued(concs[0]),
            syncoid_each,
            lambda: zab("zab", zb, (), "zfs-autobackup"),
            local_cli,
            syncoid_recursive,
            lambda: zab("zabf", zf, peers.ZAB_FASTEST, "zfs-autobackup, fastest documented"),
            *(lambda c=c: queued(c) for c in concs[1:]),
            serial_loop,
        ]
        for step in plan:
            r = step()
            results[r.key] = r
            c = r.cost.per(n)
            print(
                f"  {r.label}: {fmt_s(r.wall)} ({r.per_ds:.3f} s per dataset), "
                f"{c['calls']:.1f} zfs calls, {c['connections']:.2f} ssh connections per "
                f"dataset ({r.others:.2f} cores used by others)",
                flush=True,
            )
    report(sec, results, n, delay, concs, slot_stats, worker_recs, serial_recs, own_cost, spawn)
    return sec


def _run(argv: list[str], env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=7200, stdin=subprocess.DEVNULL
    )


def _require(res: Any, what: str, fail_text: str | None = None) -> None:
    if res.returncode != 0 or (fail_text and fail_text in res.stdout):
        raise RuntimeError(
            f"{what} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )


def report(
    sec: Section,
    results: dict[str, Result],
    n: int,
    delay: float,
    concs: list[int],
    slot_stats: dict[int, dict[str, list[float]]],
    worker_recs: dict[int, list[dict[str, Any]]],
    serial_recs: list[dict[str, Any]],
    own_cost: float,
    spawn: dict[str, float],
) -> None:
    head = (
        f"sync all, {n} unchanged datasets, {delay * 1000:.0f} ms per zfs call, one snapshot "
        "expired per side per sync"
    )
    main = results[f"queue-c{concs[0]}"]
    c = main.cost.per(n)
    sec.row(
        f"{head}: `zrepq sync all --wait`, one worker at concurrency {concs[0]}, the CLI's "
        "start to its summary",
        f"{main.per_ds:.3f} s per dataset ({fmt_s(main.wall)})",
        "",
        f"{c['calls']:.1f} zfs calls, {c['connections']:.2f} ssh connections per dataset",
        f"<= {PER_DATASET_TARGET} s per dataset",
        main.per_ds <= PER_DATASET_TARGET,
    )
    peer_keys = ["syncoid-each", "syncoid-r", "zab", "zabf"]
    fastest = min(peer_keys, key=lambda k: results[k].per_ds)
    for key in peer_keys:
        r = results[key]
        pc = r.cost.per(n)
        ratio = r.per_ds / main.per_ds
        sec.row(
            f"{head}: zrepq (c={concs[0]}) vs {r.label}"
            + (" (the fastest peer)" if key == fastest else ""),
            f"{main.per_ds:.3f} s per dataset",
            f"{r.per_ds:.3f} s per dataset; {pc['calls']:.1f} zfs calls, "
            f"{pc['connections']:.2f} ssh connections ({pc['sessions']:.1f} remote commands) "
            "per dataset",
            f"zrepq {ratio:.2f}x as fast" if ratio >= 1 else f"zrepq {ratio:.2f}x: slower",
            "zrepq ahead",
            ratio > 1,
        )
    ratio = ZREP["per_ds"] / main.per_ds
    sec.row(
        f"{head}: zrepq (c={concs[0]}) vs upstream zrep 2.0.2 `sync all` (NOT measured in this "
        "run: issue 17's measurement, same conditions, 40 datasets)",
        f"{main.per_ds:.3f} s per dataset",
        f"{ZREP['per_ds']} s per dataset, ~{ZREP['calls']} zfs calls, {ZREP['connections']} "
        "ssh connections per dataset",
        f"{ratio:.1f}x",
        f">= {ZREP_TARGET:.0f}x",
        ratio >= ZREP_TARGET,
    )
    serial = results["serial"]
    speedup = serial.wall / main.wall
    free = max(0.1, (os.cpu_count() or 1) - main.others)
    best = max(main.cpu / free, serial.wall / concs[0])
    sec.row(
        f"{head}: speed-up of the queue (c={concs[0]}) over zrepq's engine in a serial loop "
        "(one process, no CLI, no queue; not zrep)",
        f"{fmt_s(main.wall)}",
        f"serial engine loop: {fmt_s(serial.wall)}",
        f"{speedup:.2f}x (this machine's CPU allows {serial.wall / best:.2f}x)",
        f">= {SPEEDUP_TARGET}x",
        speedup >= SPEEDUP_TARGET,
    )
    # every contender side by side
    order = [f"queue-c{c}" for c in concs] + ["local", "serial", *peer_keys]
    rows = []
    for key in order:
        r = results[key]
        pc = r.cost.per(n)
        rows.append(
            [
                r.label,
                r.settings,
                fmt_s(r.wall),
                f"{r.per_ds:.3f} s",
                f"{r.per_ds / main.per_ds:.2f}x",
                f"{pc['calls']:.1f} ({pc['calls_a']:.1f} / {pc['calls_b']:.1f})",
                f"{pc['zpool']:.2f}",
                f"{pc['destroy_a']:.2f} / {pc['destroy_b']:.2f}",
                f"{pc['connections']:.2f}",
                f"{pc['sessions']:.1f}",
                f"{r.cpu / n * 1000:.0f} ms",
            ]
        )
    rows.append(
        [
            "upstream zrep 2.0.2 `sync all` (not measured here: issue 17's figure)",
            "serial, savecount reached",
            "",
            f"{ZREP['per_ds']:.3f} s",
            f"{ZREP['per_ds'] / main.per_ds:.2f}x",
            f"~{ZREP['calls']}",
            "",
            "1 / 1",
            f"{ZREP['connections']}",
            "",
            "",
        ]
    )
    sec.table(
        f"Sync all: {n} unchanged datasets, {delay * 1000:.0f} ms per zfs call, every "
        f"contender in the same run (time relative to zrepq's queue at c={concs[0]}; calls "
        "on source / target; ssh as accepted by the target's sshd)",
        [
            "contender",
            "settings",
            "wall",
            "per dataset",
            "vs zrepq",
            "zfs calls per dataset",
            "of which zpool",
            "snapshots destroyed per dataset (src / dst)",
            "ssh connections per dataset",
            "remote commands per dataset",
            "CPU per dataset (all processes)",
        ],
        rows,
    )
    # the queue's own overhead, as before: per slot in the worker
    s_stats = per_dataset(serial_recs, delay)
    for conc, st in slot_stats.items():
        recs = worker_recs[conc]
        sec.note(
            f"sync all c={conc}: per-slot overhead beyond the zfs calls (timed where the "
            f"engine makes them): median {fmt_ms(median(st['overhead']))}, p90 "
            f"{fmt_ms(percentile(st['overhead'], 90))} ({fmt_ms(median(st['gap']))} between "
            f"tasks, {fmt_ms(median(st['intask']))} inside the task); slot median "
            f"{fmt_ms(median(st['slot']))}, zfs time median "
            f"{fmt_ms(median([r['zfs_s'] for r in recs]))}; the worker process's own CPU per "
            f"sync {fmt_ms(median([r['cpu_self'] for r in recs]))}, its local zfs/ssh "
            f"children's {fmt_ms(median([r['cpu_children'] for r in recs]))}"
        )
    if s_stats["slot"]:
        sec.note(
            f"sync all, zrepq's engine in a serial loop: {median(s_stats['calls']):.0f} zfs "
            f"calls per sync as the engine makes them; slot median "
            f"{fmt_ms(median(s_stats['slot']))}, of which in zfs calls "
            f"{fmt_ms(median([r['zfs_s'] for r in serial_recs]))}; the engine's own CPU per "
            f"sync {fmt_ms(median([r['cpu_self'] for r in serial_recs]))}"
        )
    for key in order:
        r = results[key]
        sec.note(
            f"sync all, {r.label}: wall {fmt_s(r.wall)}, CPU {r.cpu:.0f} s "
            f"({r.cpu / r.wall:.2f} cores), other processes {r.others:.2f} cores"
        )
    sec.note(
        f"sync all: the stand-in's own ~{fmt_ms(own_cost)} per call (process start) comes on "
        f"top of the {delay * 1000:.0f} ms each call sleeps; starting one control command "
        "from a worker-sized process: " + ", ".join(f"{fmt_ms(v)} ({k})" for k, v in spawn.items())
    )
    sec.note(
        f"sync all c={concs[0]}: the work needed {main.cpu:.0f} CPU s; with {free:.2f} cores "
        f"left by other processes the best possible wall is {fmt_s(best)}"
    )


if __name__ == "__main__":
    sys.exit(section_main(run))
