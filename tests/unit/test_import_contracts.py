"""The import rule, enforced: the import-linter contracts in pyproject.toml hold, and they
would catch the ways the rule was broken before (a worker importing the Celery app, a
producer reaching into workers, the engine importing Redis)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = [
    sys.executable,
    "-c",
    "from importlinter.cli import lint_imports_command; lint_imports_command()",
]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINT, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 3 kept, 0 broken." in res.stdout


def test_the_contracts_catch_imports_against_the_rule(tmp_path: Path) -> None:
    for name in ("producer", "tasks", "workers"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    for path, line in (
        ("workers/main.py", "import tasks.app"),
        ("producer/fleet.py", "from workers.keys import queue_name"),
        ("workers/engine/plan.py", "import redis"),
    ):
        with open(tmp_path / path, "a") as f:
            f.write(f"\n{line}  # noqa\n")
    res = _lint(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Contracts: 0 kept, 3 broken." in res.stdout
    for broken in ("workers.main -> tasks.app", "producer.fleet -> workers.keys", "-> redis"):
        assert broken in res.stdout, res.stdout
