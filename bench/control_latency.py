"""Latency of one short control command: cached paramiko connection vs a new `ssh` each time.

    PYTHONPATH=. python bench/control_latency.py [--n 50]

Starts a throwaway sshd (tests/harness/sshd.py, needs root).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.harness.sshd import SshdCluster
from workers.exec.local import LocalRunner
from workers.exec.remote import ParamikoRunner


def timed(label: str, n: int, call: Callable[[], object]) -> None:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    print(f"{label:<46} median {statistics.median(samples):7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        cluster = SshdCluster(Path(tmp))
        try:
            host = cluster.host("hostb")
            runner = ParamikoRunner("hostb", host.ssh_options())
            runner.run(["true"])  # connect once
            timed("LocalRunner: true", n, lambda: LocalRunner("hosta").run(["true"]))
            timed("ParamikoRunner, cached connection: true", n, lambda: runner.run(["true"]))
            timed(
                "new OpenSSH connection per command: true",
                max(5, n // 10),
                lambda: subprocess.run(host.ssh_argv("true"), check=True),
            )
            runner.close()
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
