"""Real processes for the operations tests: the scheduler, the metrics exporter, the CLI, and
redis-servers configured like production (password, TLS, Sentinel).

Every process is started by pid in its own process group and stopped the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness.netutil import REPO, free_port, stop_pid, tail, wait_for_port
from tests.harness.services import Service, spawn_logged
from workers.exec.procs import die_with_parent


def base_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZREPQ_CONFIG": "none"}
    env.update(extra)
    return env


# The console scripts (pyproject [project.scripts]) as the tests run them: by module.
SCRIPTS = {
    "zrepq": [sys.executable, "-m", "producer.cli"],
    "zrepq-worker": [sys.executable, "-m", "workers.main"],
    "celery": [sys.executable, "-m", "celery"],
}


def zrepq(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the `zrepq` CLI (`python -m producer.cli`, the console script's module)."""
    return subprocess.run(
        [*SCRIPTS["zrepq"], *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def start_scheduler(env: dict[str, str], logdir: Path, name: str = "scheduler") -> Service:
    """`zrepq scheduler` (celery beat + redbeat); returns once it runs (lock or waiting)."""
    log = logdir / f"{name}.log"
    proc = spawn_logged([*SCRIPTS["zrepq"], "scheduler"], env, log)
    svc = Service(name, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{svc.output()}")
        if "beat: Starting" in svc.output() or "Acquir" in svc.output():
            return svc
        time.sleep(0.2)
    svc.stop()
    raise RuntimeError(f"{name} did not start:\n{svc.output()}")


def start_metrics(env: dict[str, str], logdir: Path, *args: str) -> Service:
    port = free_port()
    log = logdir / "metrics.log"
    argv = [*SCRIPTS["zrepq"], "metrics", "--port", str(port), *args]
    proc = spawn_logged(argv, env, log)
    svc = Service("metrics", proc, log, port=port)
    if not wait_for_port(port, proc, timeout=60):
        svc.stop()
        raise RuntimeError(f"metrics did not start:\n{svc.output()}")
    return svc


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        return str(resp.read().decode())


class ConfiguredRedis:
    """A redis-server (or sentinel) from config lines, on loopback, no persistence."""

    def __init__(self, workdir: Path, lines: list[str], *, sentinel: bool = False) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server not found")
        self.exe = exe
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.lines = lines
        self.sentinel = sentinel
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def start(self, listen_port: int | None = None) -> None:
        conf = self.workdir / "redis.conf"
        head = [
            f"port {self.port}" if listen_port is None else "port 0",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            f"logfile {self.log}",
            "protected-mode no",
        ]
        if not self.sentinel:
            head += ['save ""', "appendonly no"]
        conf.write_text("\n".join([*head, *self.lines, ""]))
        argv = [self.exe, str(conf), *(["--sentinel"] if self.sentinel else [])]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=die_with_parent(),
        )
        if not wait_for_port(listen_port or self.port, self.proc, timeout=20):
            raise RuntimeError(f"redis-server did not start:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None


def make_tls_files(d: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=zrepq-test-ca")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}
