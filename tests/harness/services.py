"""Real zrepq workers (Celery) and Flower as subprocesses, for the queue tests, the namespace
test bed and the demo.

A worker is `python -m workers.main` with one site's environment: its host name, its stand-in
zfs state, the shared ssh client config, the test Redis as broker; `prefix` runs it inside
something (`ip netns exec NS`). It counts as started once it registered in Redis. Everything
started here is stopped by pid (whole process group), even when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from tests.harness.netutil import REPO, free_port, spawn_logged, wait_for_port
from tests.harness.pids import stop_group
from tests.harness.signing import keys
from tests.harness.standin import standin_env
from workers.keys import host_key

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
        """SIGTERM the service's process group, SIGKILL what is left of it after `grace` (pool
        children that outlived their parent too), reap it. Never by a pid already reaped:
        that number may be another session's process group by now (`pids.stop_group`)."""
        stop_group(self.proc, grace)


def worker_env(
    host: str, broker: str, site_env: dict[str, str], ssh_config: str | None, **extra: str
) -> dict[str, str]:
    env = {**os.environ, **keys(), **site_env}
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


def start_worker(
    host: str,
    env: dict[str, str],
    logdir: Path,
    timeout: float = 60.0,
    prefix: Sequence[str] = (),
) -> Service:
    """Start `zrepq-worker` for `host` and wait until it has registered in Redis."""
    return start_workers({host: env}, logdir, timeout, {host: prefix})[host]


def start_workers(
    envs: dict[str, dict[str, str]],
    logdir: Path,
    timeout: float = 90.0,
    prefixes: dict[str, Sequence[str]] | None = None,
) -> dict[str, Service]:
    """Start a worker per host (`envs`: host -> its environment) at once, then wait until
    every one registered in Redis (each takes seconds to import Celery). All or none: if one
    exits or is late, all are stopped and RuntimeError says which and shows its log."""
    started: dict[str, Service] = {}
    clients = {host: redis.Redis.from_url(env["ZREPQ_BROKER_URL"]) for host, env in envs.items()}
    try:
        for host, env in envs.items():
            clients[host].delete(host_key(host))
            argv = [*(prefixes or {}).get(host, ()), sys.executable, "-m", "workers.main"]
            log = logdir / f"worker-{host}.log"
            started[host] = Service(host, spawn_logged(argv, env, log), log)
        waiting = dict(started)
        deadline = time.monotonic() + timeout
        while waiting:
            for host, svc in list(waiting.items()):
                if svc.proc.poll() is not None:
                    raise RuntimeError(
                        f"worker {host} exited ({svc.proc.returncode}):\n{svc.output()}"
                    )
                raw = clients[host].get(host_key(host))
                if raw and json.loads(raw).get("registered"):
                    del waiting[host]
            if waiting and time.monotonic() > deadline:
                host, svc = next(iter(waiting.items()))
                raise RuntimeError(
                    f"worker {host} did not register within {timeout} s:\n{svc.output()}"
                )
            time.sleep(0.1)
    except BaseException:
        stop_all(started)
        raise
    return started


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
    env = {**os.environ, **keys(), "ZREPQ_BROKER_URL": broker, "PYTHONPATH": str(REPO)}
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
    envs = {
        name: worker_env(
            name, broker, standin_env(cluster.host(name).root), str(cluster.config_file), **extra
        )
        for name in hosts
    }
    return start_workers(envs, logdir)


def stop_all(services: dict[str, Service]) -> None:
    for svc in services.values():
        svc.stop()
