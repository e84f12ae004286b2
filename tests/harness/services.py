"""Real zrepq workers (Celery) and Flower as subprocesses, for the queue tests and the demo.

A worker is `python -m workers.main` with one site's environment: its host name, its stand-in
zfs state, the shared ssh client config, the test Redis as broker. Everything started here is
stopped by pid (whole process group), even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from tests.harness.netutil import REPO, child_preexec, free_port, wait_for_port
from tests.harness.standin import standin_env
from workers.keys import HOSTS_KEY

if TYPE_CHECKING:
    from tests.harness.sshd import SshdCluster


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # Pool children that outlived their parent (SIGKILL tests) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def spawn_logged(argv: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen[bytes]:
    """Start a service with its output appended to `log`, in its own process group (one
    killpg stops it and everything it forks), dying with the harness (`child_preexec`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            process_group=0,
            preexec_fn=child_preexec(),
        )


def worker_env(
    host: str, broker: str, site_env: dict[str, str], ssh_config: str | None, **extra: str
) -> dict[str, str]:
    env = {**os.environ, **site_env}
    env.update(
        {
            "ZREPQ_HOST": host,
            "ZREPQ_BROKER_URL": broker,
            "PYTHONPATH": str(REPO),
            "ZREPQ_CONCURRENCY": extra.pop("ZREPQ_CONCURRENCY", "2"),
            "ZREPQ_LOGLEVEL": "INFO",
        }
    )
    if ssh_config:
        env["ZREPQ_SSH_CONFIG"] = ssh_config
    env.update(extra)
    return env


def start_worker(host: str, env: dict[str, str], logdir: Path, timeout: float = 60.0) -> Service:
    """Start `zrepq-worker` for `host` and wait until it has registered in Redis."""
    client = redis.Redis.from_url(env["ZREPQ_BROKER_URL"])
    client.hdel(HOSTS_KEY, host)
    log = logdir / f"worker-{host}.log"
    proc = spawn_logged([sys.executable, "-m", "workers.main"], env, log)
    svc = Service(host, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {host} exited ({proc.returncode}):\n{svc.output()}")
        raw = client.hget(HOSTS_KEY, host)
        if raw and json.loads(raw).get("registered"):
            return svc
        time.sleep(0.2)
    svc.stop()
    raise RuntimeError(f"worker {host} did not register within {timeout} s:\n{svc.output()}")


def start_flower(
    broker: str,
    logdir: Path,
    *,
    port: int | None = None,
    basic_auth: str | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 60.0,
) -> Service:
    """Flower with the app (`-A`, so send-task and async-apply work). With `basic_auth`
    ("user:password") every page and API call needs it; without, the API is left open."""
    port = port or free_port()
    env = {**os.environ, "ZREPQ_BROKER_URL": broker, "PYTHONPATH": str(REPO)}
    args = [f"--port={port}", "--address=127.0.0.1", *(extra_args or [])]
    if basic_auth:
        args.append(f"--basic-auth={basic_auth}")
    else:
        env["FLOWER_UNAUTHENTICATED_API"] = "1"
    log = logdir / f"flower-{port}.log"
    argv = [sys.executable, "-m", "celery", "-A", "tasks.app", "flower", *args]
    proc = spawn_logged(argv, env, log)
    svc = Service("flower", proc, log, port=port)
    if not wait_for_port(port, proc, timeout=timeout):
        svc.stop()
        raise RuntimeError(f"flower did not start:\n{svc.output()}")
    return svc


def start_site_workers(
    cluster: SshdCluster, hosts: Iterable[str], broker: str, logdir: Path, **extra: str
) -> dict[str, Service]:
    """One worker per simulated host of `cluster`: its own stand-in root, the cluster's ssh
    client config, `extra` added to its environment. All or none: a failure stops the rest."""
    started: dict[str, Service] = {}
    try:
        for name in hosts:
            sshd = cluster.host(name)
            env = worker_env(
                name, broker, standin_env(sshd.root), str(cluster.config_file), **extra
            )
            started[name] = start_worker(name, env, logdir)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(services: dict[str, Service]) -> None:
    for svc in services.values():
        svc.stop()
