"""The benchmarks still run: every bench script once, at tiny sizes, so they do not rot.

Nothing here is timed or compared with a target: slow is never a failure. A run fails only
when a benchmark cannot do its work (a broken import, a sync that fails, a wrong summary, a
peer that cannot run against the stand-in). Section 5 (real OpenZFS in two QEMU guests) runs
only when real OpenZFS is requested (`--zfs=real-2.3`, `ZREPQ_REALZFS=2.3`), like the
realzfs tier it reuses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import peers
from tests.harness.netutil import REPO
from tests.harness.sshd import sshd_unavailable
from tests.realzfs.plugin import STATE

pytestmark = pytest.mark.integration


def _needs() -> None:
    reason = sshd_unavailable() or peers.missing()
    for exe in ("redis-server", "zstd", "pv"):
        if reason is None and shutil.which(exe) is None:
            reason = f"{exe} not found on PATH"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def _run(argv: list[str], timeout: float, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **extra}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.timeout(1200)
def test_bench_runs_every_section(tmp_path: Path) -> None:
    _needs()
    out = tmp_path / "benchmarks.md"
    res = _run(["-m", "bench", "--smoke", "--only", "1,2,3,4,6", "--output", str(out)], 1180)
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    text = out.read_text()
    for section in ("1", "2", "3", "4", "6"):
        assert f"| {section} |" in text, text
    assert "FAILED" not in text and "skipped" not in text, text
    assert "all correct" in text  # the scale run's summaries
    assert "- command: `" in text and "cores" in text
    # every peer ran, side by side with zrepq, and the zrep figure is marked as not measured
    for contender in (
        "whole engine sync vs syncoid",
        "whole engine sync vs zfs-autobackup",
        "zrepq (c=4) vs syncoid, one run per dataset",
        "zrepq (c=4) vs syncoid --recursive --skip-parent",
        "zrepq (c=4) vs zfs-autobackup",
        "zrepq (c=4) vs zfs-autobackup, fastest documented",
        "NOT measured in this run",
    ):
        assert contender in text, contender
    table = text.split("**Sync all:", 1)[1]
    for contender in ("zrepq-local sync all", "zrepq's engine in a serial loop", "syncoid"):
        assert contender in table, contender
    assert "1.00 / 1.00" in table  # one snapshot expired per side per sync, counted


@pytest.mark.realzfs
@pytest.mark.timeout(3600)
def test_bench_real_openzfs_section(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if not request.config.stash[STATE].real:
        pytest.skip("real OpenZFS not requested (--zfs=real-2.3 or ZREPQ_REALZFS=2.3)")
    _needs()
    out = tmp_path / "benchmarks.md"
    line = request.config.stash[STATE].real[-1]  # the newest line requested
    argv = ["-m", "bench", "--smoke", "--only", "5", "--output", str(out)]
    res = _run(argv, 3500, ZREPQ_BENCH_ZFS=line)
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    text = out.read_text()
    assert "| 5 |" in text and "FAILED" not in text and "skipped" not in text, text
    assert "what one zfs call costs there" in text
    for contender in ("syncoid, one run per dataset", "zfs-autobackup", "zrepq-local"):
        assert contender in text, contender


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "argv",
    [
        ["bench/pipeline_throughput.py", "--mib", "2", "--runs", "1"],
        ["bench/control_latency.py", "--n", "3"],
    ],
    ids=["pipeline_throughput", "control_latency"],
)
def test_micro_benchmarks_run(argv: list[str]) -> None:
    _needs()
    res = _run(argv, timeout=580)
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    assert "MB/s" in res.stdout or "median" in res.stdout
