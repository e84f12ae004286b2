"""The benchmarks still run: every bench script once, at tiny sizes, so they do not rot.

Nothing here is timed or compared with a target: slow is never a failure. A run fails only
when a benchmark cannot do its work (a broken import, a sync that fails, a wrong summary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.netutil import REPO
from tests.harness.sshd import sshd_unavailable

pytestmark = pytest.mark.integration


def _needs() -> None:
    reason = sshd_unavailable()
    for exe in ("redis-server", "zstd", "pv"):
        if reason is None and shutil.which(exe) is None:
            reason = f"{exe} not found on PATH"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.timeout(900)
def test_bench_runs_every_section(tmp_path: Path) -> None:
    _needs()
    out = tmp_path / "benchmarks.md"
    res = _run(["-m", "bench", "--smoke", "--output", str(out)], timeout=880)
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    text = out.read_text()
    for section in ("1", "2", "3", "4", "5"):
        assert f"| {section} |" in text, text
    assert "FAILED" not in text and "skipped" not in text, text
    assert "all correct" in text  # the scale run's summaries
    assert "- command: `" in text and "cores" in text


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
