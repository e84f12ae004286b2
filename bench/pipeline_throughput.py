"""Throughput of the stream pipeline, and what progress reporting costs.

    PYTHONPATH=. python bench/pipeline_throughput.py [--mib 256] [--runs 3]

Starts a throwaway sshd (tests/harness/sshd.py, needs root) for the remote cases. Prints the
median MB/s and the CPU seconds per GiB spent by the pipeline's processes (client side:
`cat`, `ssh`, filters; for a push the remote receiver and sshd are not counted).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from tests.harness.sshd import SshdCluster
from workers.engine.ports import StreamSpec
from workers.exec.pipeline import run_stream
from workers.exec.progress import SendProgress
from workers.exec.ssh_options import SshOptions

MiB = 1 << 20


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(
    label: str, spec: StreamSpec, ssh: SshOptions, size: int, runs: int
) -> tuple[float, float]:
    rates, cpus, mine = [], [], []
    gib = size / (1 << 30)
    for _ in range(runs):
        cpu0, self0, t0 = children_cpu(), own_cpu(), time.monotonic()
        run_stream(spec, is_local=lambda h: h == "hosta", ssh=ssh)
        wall = time.monotonic() - t0
        rates.append(size / wall / 1e6)
        cpus.append((children_cpu() - cpu0) / gib)
        mine.append((own_cpu() - self0) / wall)
    rate, cpu = statistics.median(rates), statistics.median(cpus)
    print(
        f"{label:<42} {rate:6.0f} MB/s {cpu:6.2f} CPU s/GiB"
        f"  (worker itself: {statistics.median(mine) * 100:.1f}% of a CPU)"
    )
    return rate, cpu


def parse_cost(lines: int = 200_000) -> float:
    """Microseconds to parse one `zfs send -v -P` per-second line."""
    p = SendProgress()
    text = [f"10:00:{i % 60:02d}\t{i * 1000}\tpool/fs@zrep_000001" for i in range(lines)]
    t0 = time.perf_counter()
    for line in text:
        p.feed(line)
    return (time.perf_counter() - t0) / lines * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.mib * MiB
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        data = Path(tmp) / "data.bin"
        with open(data, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MiB))
        cluster = SshdCluster(Path(tmp) / "sshd")
        try:
            host = cluster.host("hostb")
            ssh = host.ssh_options()
            gcm = host.ssh_options(cipher="aes128-gcm@openssh.com")
            send = ("cat", str(data))
            # A file sink, as zfs recv writes what it reads (a /dev/null sink flatters splice(2)).
            sink = ("dd", f"of={Path(tmp) / 'out.bin'}", "bs=1M", "status=none")
            print(
                f"{args.mib} MiB of random data, median of {args.runs} runs, {os.cpu_count()} CPUs"
            )
            plain = StreamSpec("hosta", send, "hosta", sink)
            counted = StreamSpec("hosta", send, "hosta", sink, outfilter="pv -n -b")
            for _ in range(2):  # alternate, so warm-up and load drift hit both alike
                measure("local | local", plain, ssh, size, args.runs)
                measure("local | pv -n -b | local (byte counting)", counted, ssh, size, args.runs)
            measure(
                "push, ssh default cipher",
                StreamSpec("hosta", send, "hostb", sink),
                ssh,
                size,
                args.runs,
            )
            measure(
                "push, ssh aes128-gcm",
                StreamSpec("hosta", send, "hostb", sink),
                gcm,
                size,
                args.runs,
            )
            measure(
                "pull, ssh aes128-gcm",
                StreamSpec("hostb", send, "hosta", sink),
                gcm,
                size,
                args.runs,
            )
            measure(
                "push, aes128-gcm, zstd -1 filters",
                StreamSpec("hosta", send, "hostb", sink, "zstd -c -1", "zstd -dc"),
                gcm,
                size,
                args.runs,
            )
        finally:
            cluster.stop_all()
    us = parse_cost()
    print(f"parsing one -P progress line: {us:.2f} us (zfs send prints one per second)")


if __name__ == "__main__":
    main()
