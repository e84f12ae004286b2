"""1. Data path: one large incremental, zrepq vs the bare shell pipeline, in the same run.

    python -m bench.datapath [--quick|--smoke]

hosta (this process, stand-in zfs) replicates `poola/big` to hostb (stand-in zfs behind a
real sshd). Before every run both hosts are wiped and the pair is set up afresh: `init`
(tiny), then one new file of SIZE bytes (a fresh random header over a template, so every run
sends new data the receiver has never seen) and `zfs snapshot`. Then one of:

- baseline: `sh -c 'zfs send -I @zrep_000000 @zrep_000001 | ssh -F cfg hostb zfs recv dst'`,
  the cron one-liner, with the same ssh config (and cipher) zrepq uses;
- zrepq engine: `sync.synconly(ctx, ...)` in this process (reads both sides, lease, size
  estimate, `send -v -P` with progress parsing, mark sent, holds, expire);
- zrepq worker: `zrep.synconly` through Redis and a real worker for hosta,
  timed from enqueue to result;
- syncoid: `syncoid --no-sync-snap SRC root@hostb:DST` (send the newest snapshot, the one
  taken before the clock) at the settings of bench/peers.py (`--compress=none --quiet`, its
  mbuffer on both sides);
- zfs-autobackup: `zfs-autobackup --no-snapshot --other-snapshots bench poolb` (send the
  snapshot taken before the clock, whose name is not its own) at the settings of
  bench/peers.py (holds on both sides, ControlMaster).

Every contender's whole run is timed (its process start and control calls too); the peers
run under bench/reaper.py, so their ssh masters' CPU counts.

The snapshot is taken before the clock starts, so both sides time the same work: moving one
incremental. Runs alternate (baseline, engine, worker, then worker, engine, baseline, ...) so
load drift on the shared machine hits all alike; MB/s and CPU are medians, the ratio is the
median of the per-repetition ratios (runs next to each other in time). CPU is every process
involved: this process and its children (engine, pipeline stages, the worker), and sshd with
its sessions (the receiving `zfs recv`), from /proc.

A second pair of runs adds a compression stage, zrep's way: ZREP_OUTFILTER="zstd -1 -c" and
ZREP_INFILTER="zstd -dc", against `zfs send | zstd -1 -c | ssh hostb 'zstd -dc | zfs recv'`,
on compressible (text-like) data.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import calltime, peers
from bench.common import (
    GiB,
    Lab,
    MiB,
    Section,
    fmt_s,
    median,
    metered,
    missing_tools,
    section_main,
    start_timed_worker,
)

PARAMS = {
    "full": {"mib": 1024, "reps": 3, "zstd_mib": 1024, "zstd_reps": 3, "worker": True},
    "quick": {"mib": 256, "reps": 1, "zstd_mib": 256, "zstd_reps": 1, "worker": True},
    "smoke": {"mib": 8, "reps": 1, "zstd_mib": 8, "zstd_reps": 1, "worker": True},
}
TARGET = 0.95
# Names no other test uses: syncoid refuses to receive into a dataset some `zfs recv` on the
# machine names (`ps`), and the machine is shared.
SRC, DST = "poola/datapath", "poolb/datapath"
BASE, NEW = f"{SRC}@zrep_000000", f"{SRC}@zrep_000001"
ZSTD_OUT, ZSTD_IN = "zstd -1 -c", "zstd -dc"


@dataclass
class Sample:
    wall: float
    cpu: float
    others: float
    stream: float  # of the wall time, inside the send | recv pipeline
    commands: int = 0  # zfs control commands the engine ran (0 when not seen: worker)


def _random_template(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n


def _text_template(path: Path, size: int) -> float:
    """Log-like text: repeated 8 MiB blocks (beyond zstd -1's window, so each compresses on
    its own). Returns zstd -1's ratio on one block."""
    rng = random.Random(6)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
        for _ in range(2000)
    ]
    lines = []
    n = 0
    while n < 8 * MiB:
        line = (
            f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d} host{rng.randint(1, 40)} "
            f"{rng.choice(('INFO', 'WARN', 'DEBUG', 'ERROR'))} "
            + " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
            + f" id={rng.getrandbits(48):x}\n"
        )
        lines.append(line)
        n += len(line)
    block = "".join(lines).encode()[: 8 * MiB]
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    out = subprocess.run(["zstd", "-1", "-c"], input=block, capture_output=True, check=True).stdout
    return len(block) / len(out)


def _fill(dest: Path, template: Path) -> int:
    """dest = 4 KiB of fresh random bytes + template: new content, same cost every run."""
    with open(template, "rb") as src, open(dest, "wb") as out:
        out.write(os.urandom(4096))
        size = os.fstat(src.fileno()).st_size
        off = 0
        while off < size:
            off += os.sendfile(out.fileno(), src.fileno(), off, size - off)
    return 4096 + size


class DataPath:
    def __init__(self, lab: Lab, mode: str) -> None:
        from tests.harness.standin import StandinHost

        self.lab = lab
        self.mode = mode
        self.cluster = lab.cluster()
        self.hostb = self.cluster.host("hostb")
        self.a = StandinHost(lab.base / "hosta", "hosta")
        self.b = StandinHost(self.hostb.root, "hostb")
        self.redis: Any = None
        self.worker: Any = None
        self.producer: Any = None
        self.calltime_log: Path | None = None
        self.setup_engine = self.context()
        self.zab_config = peers.zab_ssh_config(
            self.cluster.config_file, lab.base / "ssh_config-zab", lab.base / "cm"
        )

    # -- setup --------------------------------------------------------------------------

    def context(self, env: dict[str, str] | None = None) -> Any:
        from workers.engine import Context, EngineConfig
        from workers.exec.transport import SshTransport

        transport = SshTransport("hosta", self.hostb.ssh_options(), local_env=self.a.env)
        self.lab.callback(transport.close)
        return Context(transport, EngineConfig.from_env(env or {}))

    def start_worker(self) -> None:
        from producer.api import Producer
        from tasks.app import make_app
        from tests.harness.services import worker_env
        from tests.harness.signing import signed
        from tests.harness.standin import standin_env

        self.redis = self.lab.redis()
        self.calltime_log = self.lab.base / "calltime-worker.jsonl"
        env = worker_env(
            "hosta",
            self.redis.url,
            standin_env(self.a.root),
            str(self.cluster.config_file),
            ZREPQ_CONCURRENCY="1",  # every task in the one warm process
            ZREPQ_BENCH_CALLTIME=str(self.calltime_log),
        )
        self.worker = self.lab.service(start_timed_worker("hosta", env, self.lab.logs))
        self.producer = Producer(app=make_app(signed({"ZREPQ_BROKER_URL": self.redis.url})))

    def prepare(self, template: Path, init: Any) -> int:
        """Fresh pair, one new file, snapshot zrep_000001 taken: ready to send.

        `init` seeds the pair with the contender's own engine or worker, so its connections
        are warm when the clock starts, as they are on a worker that has run before."""
        from tests.harness.standin import wipe_root

        wipe_root(self.a.root)
        wipe_root(self.b.root)
        self.a.create_pool("poola")
        self.b.create_pool("poolb")
        self.a.zfs("create", "-o", f"autobackup:{peers.ZAB_NAME}=true", SRC)
        self.a.write(SRC, "small.txt", b"seed\n")
        init()
        size = _fill(self.a.mountpoint(SRC) / "big.bin", template)
        self.a.zfs("snapshot", NEW)
        return size

    def landed(self) -> bool:
        return NEW.replace(SRC, DST) in self.b.snapshots(DST)

    # -- the contenders -----------------------------------------------------------------

    def baseline(self, compress: bool) -> None:
        ssh = shlex.join(self.hostb.ssh_argv())
        if compress:
            line = (
                f"zfs send -I {BASE} {NEW} | {ZSTD_OUT} | "
                f"{ssh} {shlex.quote(f'{ZSTD_IN} | zfs recv {DST}')}"
            )
        else:
            line = f"zfs send -I {BASE} {NEW} | {ssh} zfs recv {DST}"
        subprocess.run(["sh", "-c", line], env=self.a.env, check=True)

    def zrepq_engine(self, ctx: Any) -> None:
        from workers.engine import run
        from workers.engine.requests import SynconlyRequest

        res = run(ctx, SynconlyRequest(fs=SRC))
        if res.status != "synced":
            raise RuntimeError(f"engine sync: {res}")

    def zrepq_worker(self) -> None:
        rec = self._wait(self.producer.synconly(SRC, host="hosta"))
        if rec["result"].get("status") != "synced":
            raise RuntimeError(f"worker sync: {rec}")

    def syncoid(self) -> None:
        argv = peers.syncoid_argv(self.cluster.config_file, "hostb", SRC, DST, "--no-sync-snap")
        self._peer(peers.run_reaped(argv, self.a.env), "syncoid")

    def zab(self) -> None:
        cfg = self.zab_config
        argv = peers.zab_argv(
            cfg, "hostb", DST.split("/")[0], "--no-snapshot", "--other-snapshots", strip=1
        )
        self._peer(
            peers.run_reaped(argv, self.a.env, after=peers.zab_close(cfg, "hostb")),
            "zfs-autobackup",
        )

    @staticmethod
    def _peer(res: Any, what: str) -> None:
        if res.returncode != 0:
            raise RuntimeError(f"{what} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")

    def worker_init(self) -> None:
        self._wait(self.producer.init(SRC, "hostb", DST, host="hosta"))

    def _wait(self, r: Any) -> dict[str, Any]:
        from producer.watch import wait

        rec = wait({"t": r}, timeout=600, show=False, poll=0.02)["t"]
        if not rec.get("ok"):
            raise RuntimeError(f"worker task failed: {rec}")
        return rec

    def measure(self, template: Path, run: Any, init: Any) -> Sample:
        self.prepare(template, init)
        calltime.install()
        calltime.start()
        with metered() as m:
            run()
        acc = calltime.stop()
        if not self.landed():
            raise RuntimeError(f"{NEW} did not land on hostb")
        return Sample(m.wall, m.cpu, m.others, acc.stream_seconds, acc.commands)

    def worker_stream_seconds(self) -> float:
        """Stream time of the worker's last sync, from its call-time log."""
        lines = self.calltime_log.read_text().splitlines() if self.calltime_log else []
        return json.loads(lines[-1])["stream_s"] if lines else float("nan")


def _label(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def run(mode: str) -> Section:
    sec = Section("1")
    why = missing_tools("sshd", "redis", "zstd") or peers.missing()
    if why:
        sec.skipped = why
        return sec
    p = PARAMS[mode]
    with Lab("datapath") as lab:
        dp = DataPath(lab, mode)
        plain = dp.context()
        zeng = dp.context({"ZREP_OUTFILTER": ZSTD_OUT, "ZREP_INFILTER": ZSTD_IN})
        rnd, txt = lab.base / "random.tmpl", lab.base / "text.tmpl"
        _random_template(rnd, p["mib"] * MiB)
        ratio = _text_template(txt, p["zstd_mib"] * MiB)
        if p["worker"]:
            dp.start_worker()

        def init_with(ctx: Any) -> Any:
            from workers.engine import run
            from workers.engine.requests import InitRequest

            return lambda: run(ctx, InitRequest(fs=SRC, dest_host="hostb", dest_fs=DST))

        # name -> (run, init); the baseline's pair is seeded by the plain engine.
        runs: dict[str, tuple[Any, Any]] = {
            "baseline": (lambda: dp.baseline(False), init_with(plain)),
            "engine": (lambda: dp.zrepq_engine(plain), init_with(plain)),
        }
        if p["worker"]:
            runs["worker"] = (dp.zrepq_worker, dp.worker_init)
        runs["syncoid"] = (dp.syncoid, init_with(plain))
        runs["zfs-autobackup"] = (dp.zab, init_with(plain))
        zruns: dict[str, tuple[Any, Any]] = {
            "zstd baseline": (lambda: dp.baseline(True), init_with(plain)),
            "zstd engine": (lambda: dp.zrepq_engine(zeng), init_with(zeng)),
        }
        samples: dict[str, list[Sample]] = {k: [] for k in (*runs, *zruns)}
        plan = [(runs, rnd, p["mib"], p["reps"]), (zruns, txt, p["zstd_mib"], p["zstd_reps"])]
        for group, template, mib, reps in plan:
            size = 4096 + mib * MiB
            print(f"[1] data path: {_label(mib)} from {template.name}, {reps} rep(s)", flush=True)
            for rep in range(reps):
                # Alternate the order, so drift in the machine's load hits every contender.
                order = list(group) if rep % 2 == 0 else list(reversed(group))
                for name in order:
                    run_, init = group[name]
                    s = dp.measure(template, run_, init)
                    if name == "worker":
                        s.stream = dp.worker_stream_seconds()
                    samples[name].append(s)
                    print(
                        f"  {name:<14} {size / s.wall / 1e6:7.1f} MB/s "
                        f"{s.cpu / (size / GiB):6.2f} CPU s/GiB  wall {s.wall:6.2f} s, "
                        f"stream {s.stream:6.2f} s  (others: {s.others / s.wall:.2f} cores)",
                        flush=True,
                    )

    def summary(name: str, nbytes: int) -> tuple[float, float]:
        ss = samples[name]
        return (
            nbytes / median([s.wall for s in ss]) / 1e6,
            median([s.cpu for s in ss]) / (nbytes / GiB),
        )

    size, zsize = 4096 + p["mib"] * MiB, 4096 + p["zstd_mib"] * MiB
    calls = max([s.commands for s in samples.get("engine", [])] or [0])
    plain, text = _label(p["mib"]), f"{_label(p['zstd_mib'])} text (zstd -1 ratio {ratio:.1f})"
    # (zrepq run, baseline run, bytes, what, the stream alone?)
    rows = [
        ("engine", "baseline", size, f"{plain} incompressible: the stream inside a sync", True),
        (
            "engine",
            "baseline",
            size,
            f"{plain} incompressible: whole engine sync (stream + {calls} zfs control calls)",
            False,
        ),
        (
            "worker",
            "baseline",
            size,
            f"{plain} incompressible: whole sync through Redis and a worker, enqueue to result",
            False,
        ),
        (
            "engine",
            "syncoid",
            size,
            f"{plain} incompressible: whole engine sync vs syncoid ("
            + " ".join(("--no-sync-snap", *peers.SYNCOID_OPTIONS))
            + ", mbuffer both sides)",
            False,
        ),
        (
            "engine",
            "zfs-autobackup",
            size,
            f"{plain} incompressible: whole engine sync vs zfs-autobackup (--no-snapshot "
            "--other-snapshots, holds, ControlMaster)",
            False,
        ),
        ("zstd engine", "zstd baseline", zsize, f"{text}, zstd filters: the stream", True),
        ("zstd engine", "zstd baseline", zsize, f"{text}, zstd filters: whole engine sync", False),
    ]
    peers_runs = ("syncoid", "zfs-autobackup")
    for name, base, nbytes, what, stream_only in rows:
        if not samples.get(name) or not samples.get(base):
            continue
        # Ratios per repetition (the runs were next to each other in time), then the median:
        # the machine's load drifts more between repetitions than within one.
        pairs = list(zip(samples[base], samples[name], strict=False))
        ratios = [b.wall / (z.stream if stream_only else z.wall) for b, z in pairs]
        r = median(ratios)
        spread = f" (runs {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        b_rate, b_cpu = summary(base, nbytes)
        if stream_only:
            z_text = f"{nbytes / median([z.stream for z in samples[name]]) / 1e6:.0f} MB/s"
            extra = ""
        else:
            rate, cpu = summary(name, nbytes)
            z_text = f"{rate:.0f} MB/s, {cpu:.1f} CPU s/GiB"
            extra = f"; fixed cost {fmt_s(median([z.wall - z.stream for z in samples[name]]))}"
        versus = "" if base in peers_runs else " vs `zfs send | ssh zfs recv`"
        sec.row(
            f"data path: {what}{versus}",
            z_text,
            f"{b_rate:.0f} MB/s, {b_cpu:.1f} CPU s/GiB",
            f"{r:.2f}x{spread}{extra}",
            f">= {TARGET}x",
            r >= TARGET,
        )
    for name, ss in samples.items():
        if not ss:
            continue
        inner = (
            ""
            if "baseline" in name or name in peers_runs
            else f", of which in the pipeline {'/'.join(f'{s.stream:.2f}' for s in ss)} s"
        )
        sec.note(
            f"data path {name}: wall {'/'.join(f'{s.wall:.2f}' for s in ss)} s{inner}; CPU "
            f"{'/'.join(f'{s.cpu:.1f}' for s in ss)} s; other processes "
            f"{'/'.join(f'{s.others / s.wall:.2f}' for s in ss)} cores"
        )
    return sec


if __name__ == "__main__":
    sys.exit(section_main(run))
