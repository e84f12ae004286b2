"""A throwaway redis-server on one address and port: no persistence, its own directory.

Loopback by default; the namespace test bed binds it to the root namespace's end of its link.
`restart()` loses everything (a crash of a Redis without persistence); `restart(keep_data=True)`
is `systemctl restart` of a Redis that saves on shutdown.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.harness.netutil import free_port, spawn_logged, stop_pid, tail, wait_for_port


class RedisServer:
    """One redis-server process on `address`; the port is picked at the first start and kept."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        address: str = "127.0.0.1",
        client_defaults: dict[str, Any] | None = None,
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError(
                "redis-server not found on PATH (Debian: apt-get install redis-server)"
            )
        self.executable = exe
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.port = port or 0
        self.client_defaults = dict(client_defaults or {})  # e.g. a socket_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **{**self.client_defaults, **kwargs})

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        fixed = bool(self.port)
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port(self.address)
            if self._start_once():
                return
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail(self._log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None

    def restart(self, *, keep_data: bool = False, down_for: float = 0.0) -> None:
        """Restart on the same address and port, after `down_for` seconds down.

        keep_data=True is `systemctl restart` of a Redis that saves on shutdown (SHUTDOWN SAVE,
        reloaded from dump.rdb); keep_data=False is a crash of a Redis without persistence
        (SIGKILL, everything gone: queues, results, leases).
        """
        assert self.proc is not None, "restart of a redis-server that is not running"
        if keep_data:
            with contextlib.suppress(redis.RedisError):
                self.client().shutdown(save=True)
            self.proc.wait(30)
        else:
            self.proc.kill()
            self.proc.wait()
            (self.workdir / "dump.rdb").unlink(missing_ok=True)
        self.proc = None
        if down_for:
            time.sleep(down_for)
        self.start()

    @property
    def _log(self) -> Path:
        return self.workdir / "redis.log"

    def _start_once(self) -> bool:
        argv = [
            self.executable,
            "--port", str(self.port),
            "--bind", self.address,
            "--save", "",  # no automatic dumps; restart(keep_data=True) saves on purpose
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--dbfilename", "dump.rdb",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self._log),
        ]  # fmt: skip
        self.proc = spawn_logged(argv, None, self.workdir / "redis.out")
        if wait_for_port(self.port, self.proc, address=self.address) and self._ping():
            return True
        self.stop()
        return False

    def _ping(self) -> bool:
        try:
            with redis.Redis(host=self.address, port=self.port, socket_timeout=2) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False
