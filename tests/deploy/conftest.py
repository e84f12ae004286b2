"""Session set-up of the deployment tier (tests/deploy), shared by its two halves:

- the Docker engine (tests/deploy/docker_host.py: started here if none runs);
- a copy of this checkout, as an admin has it, with its wheelhouse made as docs/install.md
  says (block `wheelhouse`): every image build and every host install below uses only it;
- the Debian 12 base image made with debootstrap and `docker import` (block `debian-base`),
  kept between runs as `local/debian:bookworm` (the one image this tier leaves behind: a
  cold run makes it in ~1-2 min), and Redis built from Debian's package (block
  `redis-image`).

Figures the issue asks for (times, sizes) are collected in FIGURES, printed at the end of
the run and written with the screenshots to tests/deploy/artifacts/ (not committed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.docker_host import Docker, Dockerd, need_tool, run
from tests.deploy.install_doc import block
from tests.harness.netutil import REPO

ARTIFACTS = REPO / "tests" / "deploy" / "artifacts"
BASE_IMAGE = "local/debian:bookworm"  # the name docs/install.md gives it
REDIS_IMAGE = "local/redis:bookworm"
SYSTEMD_IMAGE = "zrepq-test-systemd:latest"  # tests/deploy/systemd-host.Dockerfile
BASE_MAX_AGE_DAYS = 30  # older: made again (apt in the builds fetches current packages anyway)
FIGURES: dict[str, Any] = {}


def keep_images() -> bool:
    """ZREPQ_DEPLOY_KEEP_IMAGES=1 keeps the built images (a developer re-running the tier)."""
    return os.environ.get("ZREPQ_DEPLOY_KEEP_IMAGES") == "1"


def host_env(**extra: str) -> dict[str, str]:
    """The environment of a documented command run on this machine: no zrepq/zrep settings
    of the caller, no configuration file, this checkout's `zrepq` first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ZREPQ_", "ZREP_", "COMPOSE_", "DOCKER_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["ZREPQ_CONFIG"] = "none"
    env["DEBIAN_FRONTEND"] = "noninteractive"
    env.update(extra)
    return env


def run_block(
    name: str,
    cwd: Path,
    subs: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run docs/install.md's block `name` with sh -e on this machine, in `cwd`."""
    return run(
        ["sh", "-ec", block(name, subs)],
        cwd=cwd,
        env=env or host_env(),
        timeout=timeout,
        log=ARTIFACTS / "blocks.log",
    )


class Background:
    """A command left running while the tests go on (an image build); `wait` for its end."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.t0 = time.monotonic()
        self.took: float | None = None
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait(self, timeout: float) -> float:
        """Seconds it took; raises with its output if it failed."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        if self.took is None:
            self.took = time.monotonic() - self.t0
        assert rc == 0, f"{self.proc.args} failed ({rc}):\n{self.log.read_text()[-4000:]}"
        return self.took

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("deployment figures (tests/deploy)")
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="session")
def artifacts() -> Iterator[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*"):
        if old.is_file():
            old.unlink()
    shots = ARTIFACTS / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir()
    yield ARTIFACTS
    (ARTIFACTS / "figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture(scope="session")
def docker(artifacts: Path) -> Iterator[Docker]:
    need_tool("docker-compose", "docker-compose")
    engine = Dockerd(artifacts / "dockerd.log")
    t0 = time.monotonic()
    started_here = not engine.answers()
    dk = engine.start()
    if started_here:
        FIGURES["dockerd start (s)"] = round(time.monotonic() - t0, 1)
    dangling = dk.dangling()
    try:
        yield dk
    finally:
        if not keep_images():  # the build stages of the images this run built and removed
            left = dk.dangling() - dangling
            if left:
                dk("rmi", *sorted(left), check=False)
        engine.stop()


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Path:
    """This checkout's files (tracked and new, as on disk) in a scratch folder, plus the
    wheelhouse made there as documented. Nothing the tier does touches the real checkout."""
    dest = tmp_path_factory.mktemp("admin") / "zrepq"
    files = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    t0 = time.monotonic()
    run_block("wheelhouse", dest, timeout=600)
    wheels = sorted((dest / "docker" / "wheelhouse").glob("*.whl"))
    assert any(w.name.startswith("zrepq-") for w in wheels), wheels
    FIGURES["wheelhouse (s)"] = round(time.monotonic() - t0, 1)
    FIGURES["wheelhouse"] = (
        f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 1e6:.1f} MB"
    )
    return dest


@pytest.fixture(scope="session")
def debian_base(docker: Docker, checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian 12 from debootstrap, imported as `local/debian:bookworm` (kept between runs)."""
    found = docker.image(BASE_IMAGE)
    if found is not None:
        made = datetime.fromisoformat(found["Created"][:19]).replace(tzinfo=UTC)
        if (datetime.now(UTC) - made).days < BASE_MAX_AGE_DAYS:
            FIGURES["debian base"] = f"cached {BASE_IMAGE} ({found['Size'] / 1e6:.0f} MB)"
            return BASE_IMAGE
    need_tool("debootstrap", "debootstrap")
    root = tmp_path_factory.mktemp("debootstrap") / "bookworm"
    t0 = time.monotonic()
    run_block("debian-base", checkout, {"/tmp/bookworm": str(root)}, timeout=900)
    img = docker.image(BASE_IMAGE)
    assert img is not None
    FIGURES["debian base"] = (
        f"debootstrap + import {time.monotonic() - t0:.0f} s, {img['Size'] / 1e6:.0f} MB"
    )
    return BASE_IMAGE


@pytest.fixture(scope="session")
def redis_image(docker: Docker, checkout: Path, debian_base: str) -> Iterator[str]:
    """Redis from Debian's redis-server package (docker/redis.Dockerfile)."""
    t0 = time.monotonic()
    run_block("redis-image", checkout, timeout=600)
    FIGURES["redis image build (s)"] = round(time.monotonic() - t0, 1)
    yield REDIS_IMAGE
    if not keep_images():
        docker.rmi(REDIS_IMAGE)


@pytest.fixture(scope="session")
def systemd_image_build(
    docker: Docker, checkout: Path, debian_base: str, artifacts: Path
) -> Iterator[Background]:
    """The Debian 12 + systemd host image of test_systemd.py, built in the background."""
    build = Background(
        [
            docker.exe,
            "build",
            "-q",
            "-f",
            "tests/deploy/systemd-host.Dockerfile",
            "--build-arg",
            f"BASE_IMAGE={debian_base}",
            "-t",
            SYSTEMD_IMAGE,
            str(checkout),
        ],
        artifacts / "systemd-image-build.log",
    )
    try:
        yield build
    finally:
        build.stop()
        if not keep_images():
            docker.rmi(SYSTEMD_IMAGE)


@pytest.fixture(scope="session", autouse=True)
def _early_builds(request: pytest.FixtureRequest) -> None:
    """Start the systemd image build with the session when test_systemd.py runs: the build
    (mostly apt downloads) then overlaps the compose tests instead of following them."""
    systemd_tests = Path(__file__).with_name("test_systemd.py")
    if any(item.path == systemd_tests for item in request.session.items):
        request.getfixturevalue("systemd_image_build")
