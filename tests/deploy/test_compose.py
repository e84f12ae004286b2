"""The Docker control plane, built offline and run for real, and Flower seen in a browser.

docs/install.md, "Control plane with Docker", run as written in a copy of the checkout:
.env from env.example (passwords, published ports on free loopback ports, the local Debian
base and the Redis built from Debian's package), `docker-compose up -d --build`, every
service healthy. The tests then act as a producer outside the containers: this checkout's
`zrepq` against the published Redis port. Debian's Chromium (driven by Playwright) logs in
to Flower and watches a sync run. The last test runs `docker-compose down -v` and finds
nothing left. Screenshots: tests/deploy/artifacts/screenshots/.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.deploy.conftest import FIGURES, host_env, keep_images, run_block
from tests.deploy.docker_host import Docker, run, unavailable
from tests.harness.netutil import free_port, wait_until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1500)]

PROJECT = "zrepq-deploy-test"  # COMPOSE_PROJECT_NAME: names its containers, network, volumes
REDIS_PASSWORD = "redis-pw-" + os.urandom(6).hex()
FLOWER_USER, FLOWER_PASSWORD = "admin", "flower-pw-" + os.urandom(6).hex()
BUILT = ("zrepq-control:latest", "zrepq-demo-worker:latest")  # compose.yaml's image names
RECV_RATE = 4_000_000  # DEMO_RECV_RATE for the tests: a 40 MB sync lasts ~10 s
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def set_env_file(path: Path, values: dict[str, str]) -> None:
    """Set variables in docker/.env as an admin does: only ones env.example documents."""
    text = path.read_text()
    for key, value in values.items():
        line = re.compile(rf"^#?{re.escape(key)}=.*$", re.M)
        assert line.search(text), f"docker/env.example does not document {key}"
        text = line.sub(f"{key}={value}", text, count=1)
    path.write_text(text)


@dataclass
class Stack:
    docker: Docker
    checkout: Path
    env: dict[str, str]
    redis_port: int
    flower_port: int
    metrics_port: int

    @property
    def project_label(self) -> str:
        return f"com.docker.compose.project={PROJECT}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(
            ["docker-compose", *args], cwd=self.checkout / "docker", env=self.env, timeout=timeout
        )

    def on(self, service: str, script: str) -> str:
        """Run a shell script in a demo service's container."""
        return self.compose("exec", "-T", service, "sh", "-ec", script).stdout

    @property
    def producer_env(self) -> dict[str, str]:
        return {
            **self.env,
            "ZREPQ_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "ZREPQ_REDIS_PASSWORD": REDIS_PASSWORD,
            "ZREPQ_SIGNING_KEY": str(self.signing_key()),
        }

    def signing_key(self) -> Path:
        """The stack's `ops` key (made by demo-keys), copied out once: the CLI signs with it."""
        path = self.checkout / "docker" / "ops.key"
        if not path.exists():
            text = self.on("hosta", "cat /demo-ssh/signing/ops.key")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        return path

    def zrepq(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run(["zrepq", *args], env=self.producer_env, timeout=timeout)

    def send(self, *args: str) -> str:
        """Send a task without waiting; its id."""
        out = self.zrepq("--json", *args).stdout
        return str(json.loads(out.splitlines()[0])["task_id"])

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, password=REDIS_PASSWORD, socket_timeout=10)

    def task(self, task_id: str) -> dict[str, Any]:
        """The task's record in the result backend (Celery's `celery-task-meta-<id>`)."""
        try:
            raw = self.redis().get(f"celery-task-meta-{task_id}")
        except redis.RedisError:
            return {}
        return json.loads(raw) if raw else {}

    def flower(self, path: str, auth: bool = True) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.flower_port}{path}")
        if auth:
            cred = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
            req.add_header("Authorization", f"Basic {cred}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), ""

    def containers(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for cid in self.docker.labelled("container", self.project_label):
            info = self.docker.inspect("container", cid)
            if info:
                out[info["Config"]["Labels"]["com.docker.compose.service"]] = info
        return out

    def unhealthy(self) -> list[str]:
        """Services not yet healthy (or, without a health check, not running)."""
        waiting = []
        for name, info in self.containers().items():
            state = info["State"]
            if name == "demo-keys":
                ok = state["Status"] == "exited" and state["ExitCode"] == 0
            elif "Health" in state:
                ok = state["Health"]["Status"] == "healthy"
            else:
                ok = state["Running"]
            if not ok:
                waiting.append(f"{name}: {state.get('Health', {}).get('Status', state['Status'])}")
        return waiting


@pytest.fixture(scope="module")
def stack(
    docker: Docker, checkout: Path, debian_base: str, redis_image: str, artifacts: Path
) -> Iterator[Stack]:
    env = host_env(COMPOSE_PROJECT_NAME=PROJECT)
    s = Stack(docker, checkout, env, free_port(), free_port(), free_port())
    run_block("compose-env", checkout, env=env)
    set_env_file(
        checkout / "docker" / ".env",
        {
            "ZREPQ_REDIS_PASSWORD": REDIS_PASSWORD,
            "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
            "ZREPQ_REDIS_PUBLISH": f"127.0.0.1:{s.redis_port}",
            "FLOWER_PUBLISH": f"127.0.0.1:{s.flower_port}",
            "METRICS_PUBLISH": f"127.0.0.1:{s.metrics_port}",
            "ZREPQ_BASE_IMAGE": debian_base,
            "ZREPQ_REDIS_IMAGE": redis_image,
            "DEMO_RECV_RATE": str(RECV_RATE),
        },
    )
    try:
        t0 = time.monotonic()
        run_block("compose-up", checkout, env=env, timeout=1200)
        t_up = time.monotonic()
        FIGURES["compose up -d --build (s)"] = round(t_up - t0, 1)
        healthy = wait_until(lambda: not s.unhealthy(), 240, 0.5)
        assert healthy, (
            f"not healthy after 240 s: {s.unhealthy()}\n{s.compose('logs', '--tail=40').stdout}"
        )
        FIGURES["compose: all healthy after up returned (s)"] = round(time.monotonic() - t_up, 1)
        for ref in BUILT:
            info = docker.image(ref)
            assert info is not None, ref
            FIGURES[f"image {ref}"] = f"{info['Size'] / 1e6:.0f} MB"
        yield s
    finally:
        with contextlib.suppress(Exception):
            (artifacts / "compose.log").write_text(s.compose("logs", "--no-color").stdout)
        s.compose("down", "-v", "--remove-orphans", timeout=300)
        if not keep_images():
            docker.rmi(*BUILT)


def test_images_built_offline_from_the_local_debian_base(
    stack: Stack, debian_base: str, redis_image: str
) -> None:
    base = stack.docker.image(debian_base)
    assert base is not None
    base_layer = base["RootFS"]["Layers"][0]
    for ref in (*BUILT, redis_image):
        img = stack.docker.image(ref)
        assert img is not None and img["RootFS"]["Layers"][0] == base_layer, ref
    # zrepq came from the wheelhouse into Debian's python3; Redis is Debian's package.
    out = stack.on("hosta", "python3 --version; zrepq version; dpkg -s python3 | grep ^Version")
    assert "Python 3.11" in out and "Version:" in out
    res = stack.docker("run", "--rm", "--entrypoint", "dpkg", redis_image, "-s", "redis-server")
    assert "Status: install ok installed" in res.stdout
    img = stack.docker.image(redis_image)
    assert img is not None
    FIGURES[f"image {redis_image}"] = f"{img['Size'] / 1e6:.0f} MB"


def test_control_plane_runs_with_redis_password_and_append_only_file(stack: Stack) -> None:
    assert not stack.unhealthy()
    services = set(stack.containers())
    assert {"redis", "flower", "scheduler", "metrics", "hosta", "hostb"} <= services
    # Redis refuses a client without the password, and writes its append-only file.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=stack.redis_port, socket_timeout=5).ping()
    assert stack.redis().config_get("appendonly") == {"appendonly": "yes"}
    assert "beat: Acquired lock" in stack.compose("logs", "scheduler").stdout


def test_sync_through_the_queue_from_a_producer_outside(stack: Stack) -> None:
    out = run_block(
        "compose-demo",
        stack.checkout,
        {"127.0.0.1:6379": f"127.0.0.1:{stack.redis_port}"},
        env=stack.env,
    ).stdout
    assert "initialized poola/data@zrep_000000 -> hostb:poolb/data" in out, out
    assert "every-minute" in out and re.search(r"hosta\s+poola/data\s+hostb:poolb/data", out), out
    # New bytes, a sync through hosta's queue, the same bytes on hostb.
    data = os.urandom(3_000_000)
    digest = hashlib.sha256(data).hexdigest()
    res = subprocess.run(
        [
            "docker-compose",
            "exec",
            "-T",
            "hosta",
            "sh",
            "-c",
            "cat > $ZFS_STANDIN_ROOT/mnt/poola/data/blob",
        ],
        cwd=stack.checkout / "docker",
        env=stack.env,
        input=data,
        capture_output=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    sync = stack.zrepq("-S", "hosta:poola/data", "--wait").stdout
    assert "synced poola/data@zrep_000001" in sync, sync
    there = stack.on("hostb", "cd $ZFS_STANDIN_ROOT/mnt/poolb/data && sha256sum blob hello.txt")
    assert there.split()[0] == digest
    assert hashlib.sha256(b"hello\n").hexdigest() in there
    fleet = stack.zrepq("status", "--fleet").stdout
    assert re.search(r"hosta\s+up", fleet) and re.search(r"hostb\s+up", fleet), fleet
    assert re.search(r"poola/data\s+hostb:poolb/data\s+\S+\s+ok", fleet), fleet


def test_flower_needs_its_password(stack: Stack) -> None:
    assert stack.flower("/api/workers", auth=False)[0] == 401
    assert stack.flower("/tasks", auth=False)[0] == 401
    status, body = stack.flower("/api/workers?refresh=1")
    assert status == 200
    assert {"zrepq@hosta", "zrepq@hostb"} <= set(json.loads(body)), body


def test_metrics_scrape(stack: Stack) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "zrepq_exporter_redis_up 1.0" in text
    assert re.search(r"^zrepq_hosts_registered 2\.0$", text, re.M), text[:2000]


@contextlib.contextmanager
def chromium() -> Iterator[Callable[[bool], Any]]:
    """Debian's Chromium, headless, driven by Playwright (which gives it a fresh
    --user-data-dir). Yields `new_page(login)`: a page in a new browser context, with or
    without Flower's basic-auth credentials. Every request that is not for this machine's
    loopback is refused and counted: all traffic stays here."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} not found (Debian: apt-get install chromium)")
    elsewhere: list[str] = []

    def local_only(route: Any) -> None:
        if re.match(r"^(https?|wss?)://127\.0\.0\.1[:/]", route.request.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)

        def new_page(login: bool) -> Any:
            creds = {"username": FLOWER_USER, "password": FLOWER_PASSWORD} if login else None
            ctx = browser.new_context(
                viewport={"width": 1280, "height": 900}, http_credentials=creds
            )
            ctx.route("**/*", local_only)
            return ctx.new_page()

        try:
            yield new_page
        finally:
            browser.close()
    assert not elsewhere, f"the browser tried to leave this machine: {elsewhere}"


def _progress(text: str) -> tuple[int, int] | None:
    m = re.search(r"'bytes_sent': (\d+), 'total': (\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def test_flower_in_a_browser_shows_a_running_sync(stack: Stack, artifacts: Path) -> None:
    shots = artifacts / "screenshots"
    size = 10 * RECV_RATE  # ~10 s through the demo hosts' pv -L
    stack.on("hosta", f"head -c {size} /dev/urandom > $ZFS_STANDIN_ROOT/mnt/poola/data/big.bin")
    base = f"http://127.0.0.1:{stack.flower_port}"
    with chromium() as new_page:
        # Without the password: Flower answers 401, and Chromium, with no credentials to
        # give, stops there (headless, it has no login dialog to show).
        anon = new_page(False)
        answers: list[int] = []
        anon.on("response", lambda r: answers.append(r.status))
        with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
            anon.goto(f"{base}/tasks")
        assert answers == [401], answers
        page = new_page(True)  # the browser answers Flower's basic-auth challenge
        task_id = stack.send("-S", "hosta:poola/data")
        assert wait_until(lambda: stack.task(task_id).get("status") == "PROGRESS", 30, 0.2), (
            stack.task(task_id)
        )
        # The tasks page lists the zrep.sync tasks (a table filled by Flower's own API call).
        page.goto(f"{base}/tasks")
        page.wait_for_selector(f"text={task_id}", timeout=20_000)
        rows = page.locator("table tbody tr")
        sync_rows = [r for r in rows.all_inner_texts() if "zrep.sync" in r]
        assert len(sync_rows) >= 2, rows.all_inner_texts()  # the demo's sync, and this one
        page.screenshot(path=str(shots / "flower-tasks.png"), full_page=True)
        # The running sync's page: PROGRESS, bytes sent of total, growing from one look to the next.
        seen: list[tuple[int, int]] = []
        for i in range(2):
            page.goto(f"{base}/task/{task_id}")
            text = page.inner_text("body")
            assert "zrep.sync" in text and "PROGRESS" in text, text
            prog = _progress(text)
            assert prog is not None, text
            seen.append(prog)
            page.screenshot(path=str(shots / f"flower-sync-progress-{i + 1}.png"), full_page=True)
            time.sleep(2.5)
        (a, total), (b, total2) = seen
        assert total == total2 >= size and 0 < a < b < total, seen
        FIGURES["browser: progress seen"] = (
            f"{a / 1e6:.1f} then {b / 1e6:.1f} of {total / 1e6:.1f} MB"
        )
        assert wait_until(lambda: stack.task(task_id).get("status") == "SUCCESS", 60, 0.5)
        page.goto(f"{base}/task/{task_id}")
        page.wait_for_selector("text=SUCCESS")
        page.screenshot(path=str(shots / "flower-sync-done.png"), full_page=True)


def test_redis_restart_keeps_the_schedule_and_queued_work(stack: Stack) -> None:
    # A sync queued for hosta while its worker is down, then Redis restarted under it.
    stack.on("hosta", "echo queued > $ZFS_STANDIN_ROOT/mnt/poola/data/queued.txt")
    stack.compose("stop", "hosta")
    try:
        task_id = stack.send("-S", "hosta:poola/data")
        assert task_id in _queued(stack.redis(), "zrepq.host.hosta")
        t0 = time.monotonic()
        run_block("compose-restart-redis", stack.checkout, env=stack.env, timeout=300)
        assert wait_until(lambda: _ping(stack), 60, 0.5)
        FIGURES["compose: redis restart (s)"] = round(time.monotonic() - t0, 1)
        assert task_id in _queued(stack.redis(), "zrepq.host.hosta"), "the queued sync was lost"
        runs_at_restart = _schedule_runs(stack, "every-minute")
        assert runs_at_restart >= 0, "the schedule was lost"
    finally:
        stack.compose("start", "hosta")
    done = wait_until(lambda: stack.task(task_id).get("status") == "SUCCESS", 120, 0.5)
    assert done, stack.task(task_id)
    assert stack.on("hostb", "cat $ZFS_STANDIN_ROOT/mnt/poolb/data/queued.txt") == "queued\n"

    # The demo block's schedule (every minute) fires again after the restart: kept in Redis,
    # and the scheduler found it there.
    t0 = time.monotonic()
    fired = wait_until(lambda: _schedule_runs(stack, "every-minute") > runs_at_restart, 90, 2)
    assert fired, stack.compose("logs", "--tail=30", "scheduler").stdout
    FIGURES["compose: schedule fired after the restart, waited (s)"] = round(
        time.monotonic() - t0, 1
    )


def _schedule_runs(stack: Stack, name: str) -> int:
    """How often schedule `name` has fired (-1: no such schedule)."""
    for entry in json.loads(stack.zrepq("--json", "schedule", "list").stdout):
        if entry["name"] == name:
            return int(entry["total_run_count"])
    return -1


def _queued(client: redis.Redis, queue: str) -> set[str]:
    """Ids of the task messages waiting in a Celery queue (a Redis list of JSON messages)."""
    return {json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)}


def _ping(stack: Stack) -> bool:
    try:
        return bool(stack.redis().ping())
    except redis.RedisError:
        return False


def test_down_leaves_nothing(stack: Stack) -> None:
    run_block("compose-down", stack.checkout, env=stack.env, timeout=300)
    for kind in ("container", "network", "volume"):
        assert stack.docker.labelled(kind, stack.project_label) == [], kind
