"""Shared pieces of the benchmarks: modes, result rows, CPU accounting, the throwaway stack.

Every benchmark starts what it needs from the test harness (`tests/harness`): a real sshd
per simulated host, a real redis-server, real zrepq workers and Flower, the stand-in `zfs`.
State lives under one temporary directory in /dev/shm (RAM), so the shared machine's disk
does not decide the numbers; everything started is stopped by pid at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")

MODES = ("full", "quick", "smoke")


# ---- results ----------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    section: str  # "1 data path"
    what: str
    zrepq: str
    baseline: str = ""
    result: str = ""  # the ratio, or the measured value the target is about
    target: str = ""
    ok: bool | None = None  # None: no target


@dataclass
class Section:
    """What one benchmark reports: table rows, detail lines, and why it was skipped if so."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # markdown, shown after the main table
    skipped: str | None = None
    seconds: float = 0.0

    def row(self, *args: Any, **kw: Any) -> Row:
        r = Row(self.name, *args, **kw)
        self.rows.append(r)
        return r

    def note(self, text: str) -> None:
        self.details.append(text)
        print(f"  {text}", flush=True)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A table of its own (e.g. every contender side by side), after the main one."""
        lines = [
            f"**{title}**",
            "",
            "| " + " | ".join(_cell(h) for h in header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(c) for c in r) + " |" for r in rows),
        ]
        text = "\n".join(lines)
        self.tables.append(text)
        print(text, flush=True)


def mark(ok: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[ok]


def table_markdown(rows: Sequence[Row]) -> str:
    head = (
        "| # | measure | zrepq | baseline | result | target | met |\n|---|---|---|---|---|---|---|"
    )
    lines = [
        "| "
        + " | ".join(_cell(c) for c in (r.section, r.what, r.zrepq, r.baseline, r.result, r.target))
        + f" | {mark(r.ok)} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def _cell(text: object) -> str:
    """A markdown table cell: a `|` (shell pipelines in the measure names) is escaped."""
    return str(text).replace("|", "\\|")


def table_text(rows: Sequence[Row]) -> str:
    cols = ["#", "measure", "zrepq", "baseline", "result", "target", "met"]
    data = [
        [r.section, r.what, r.zrepq, r.baseline, r.result, r.target, mark(r.ok).strip("*")]
        for r in rows
    ]
    widths = [max([len(c), *(len(d[i]) for d in data)]) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*d) for d in data]
    return "\n".join(out)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


# ---- CPU accounting ---------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """{pid: (ppid, cpu seconds incl. reaped children)} for every process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        out[int(entry)] = (int(fields[1]), ticks / CLK_TCK)
    return out


def tree_cpu(root: int | None = None) -> float:
    """CPU seconds used so far by `root` (default: this process) and all its descendants.

    Live processes count their own time and that of the children they reaped; a finished
    process's time is in its parent's. So the difference of two readings is what the whole
    tree used in between: here, the engine, the pipelines, sshd and its sessions, workers.
    """
    root = os.getpid() if root is None else root
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total


def busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / CLK_TCK


@dataclass
class Meter:
    """Wall time, CPU of our process tree, and CPU of everybody else on the machine."""

    wall: float = 0.0
    cpu: float = 0.0
    others: float = 0.0  # other processes' CPU seconds during the window

    @property
    def others_cores(self) -> float:
        return self.others / self.wall if self.wall else 0.0


@contextlib.contextmanager
def metered() -> Iterator[Meter]:
    m = Meter()
    c0, b0, t0 = tree_cpu(), busy_seconds(), time.perf_counter()
    try:
        yield m
    finally:
        m.wall = time.perf_counter() - t0
        m.cpu = tree_cpu() - c0
        m.others = max(0.0, busy_seconds() - b0 - m.cpu)


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---- machine ----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    info: dict[str, str] = {"cores": str(os.cpu_count())}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory"] = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["kernel"] = os.uname().release
    info["python"] = sys.version.split()[0]
    for name, argv, pattern in (
        ("openssh", ["ssh", "-V"], r"OpenSSH_[\w.]+"),
        ("redis", ["redis-server", "--version"], r"v=([\d.]+)"),
        ("zstd", ["zstd", "--version"], r"v([\d.]+)"),
    ):
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            m = re.search(pattern, p.stdout + p.stderr)
            if m:
                info[name] = m.group(1) if m.groups() else m.group(0)
    with contextlib.suppress(ImportError):
        import celery

        info["celery"] = celery.__version__
    return info


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---- environment checks -----------------------------------------------------------------


def missing_tools(*tools: str) -> str | None:
    """Why this machine cannot run a benchmark needing `tools` (sshd, redis, zstd), or None."""
    if "sshd" in tools:
        from tests.harness.sshd import sshd_unavailable

        reason = sshd_unavailable()
        if reason:
            return reason
    for tool, exe in (("redis", "redis-server"), ("zstd", "zstd")):
        if tool in tools and shutil.which(exe) is None:
            return f"{exe} not found on PATH"
    return None


# ---- the throwaway stack ----------------------------------------------------------------


def scratch_base() -> Path:
    """RAM-backed scratch space when there is some, else the temp dir."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class Lab(contextlib.ExitStack):
    """A temp directory plus everything started in it, all stopped and removed on exit."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix=f"zrepq-bench-{label}-", dir=scratch_base()))
        if os.environ.get("ZREPQ_BENCH_KEEP"):  # keep the hosts' state and call logs to read
            print(f"keeping {self.base} (ZREPQ_BENCH_KEEP)", flush=True)
        else:
            self.callback(shutil.rmtree, self.base, True)
        self.logs = self.base / "logs"
        self.logs.mkdir()

    def redis(self) -> Any:
        from tests.harness.redis_server import RedisServer

        server = RedisServer(self.base / "redis")
        server.start()
        self.callback(server.stop)
        return server

    def cluster(self) -> Any:
        from tests.harness.sshd import SshdCluster

        cluster = SshdCluster(self.base / "sshd")
        self.callback(cluster.stop_all)
        return cluster

    def service(self, svc: Any) -> Any:
        self.callback(svc.stop)
        return svc


def start_workers(
    envs: dict[str, dict[str, str]], logdir: Path, *, timed: bool = False, timeout: float = 180.0
) -> list[Any]:
    """Start a zrepq worker per host (`envs`: host -> environment), then wait for all of them.

    The same worker and registration check as `tests.harness.services.start_worker`, but all
    spawned at once from this (the main) thread: a child dies with the *thread* that started
    it (PDEATHSIG), so workers must not be started from short-lived helper threads. With
    `timed`, the entry point is `bench/timed_worker.py` (per-task zfs call timing).
    """
    import json

    import redis

    from tests.harness.services import Service, spawn_logged
    from workers.keys import host_key

    module = "bench.timed_worker" if timed else "workers.main"
    started: list[Any] = []
    for host, env in envs.items():
        redis.Redis.from_url(env["ZREPQ_BROKER_URL"]).delete(host_key(host))
        log = logdir / f"worker-{host}-{int(time.time() * 1000)}.log"
        started.append(Service(host, spawn_logged([sys.executable, "-m", module], env, log), log))
    deadline = time.monotonic() + timeout
    waiting = {svc.name: svc for svc in started}
    try:
        while waiting:
            for host, svc in list(waiting.items()):
                if svc.proc.poll() is not None:
                    raise RuntimeError(
                        f"worker {host} exited ({svc.proc.returncode}):\n{svc.output()}"
                    )
                client = redis.Redis.from_url(envs[host]["ZREPQ_BROKER_URL"])
                raw = client.get(host_key(host))
                if raw and json.loads(raw).get("registered"):
                    del waiting[host]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(waiting)} did not register in {timeout} s")
            time.sleep(0.1)
    except BaseException:
        for svc in started:
            svc.stop()
        raise
    return started


def start_timed_worker(host: str, env: dict[str, str], logdir: Path) -> Any:
    """One worker with per-task zfs call timing (see `start_workers`)."""
    return start_workers({host: env}, logdir, timed=True)[0]


def parallel(calls: Sequence[Callable[[], Any]], threads: int = 4) -> list[Any]:
    """Run `calls` on a few threads; re-raise the first failure."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


def fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C: every `Lab` stops what it started and removes its
    directory (the default SIGTERM would leave both behind)."""
    import signal

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


def section_main(run: Callable[[str], Section], argv: Sequence[str] | None = None) -> int:
    """`python -m bench.<name> [--quick|--smoke]`: one benchmark alone, its rows printed."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: does it still run?")
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    stop_on_sigterm()
    t0 = time.monotonic()
    sec = run(mode)
    sec.seconds = time.monotonic() - t0
    if sec.skipped:
        print(f"skipped: {sec.skipped}")
        return 0
    print(table_text(sec.rows))
    for t in sec.tables:
        print("\n" + t)
    return 0
