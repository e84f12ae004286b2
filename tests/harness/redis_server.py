"""A throwaway redis-server on a loopback port: no persistence, its own directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.harness.netutil import child_preexec, free_port, stop_pid, tail, wait_for_port


class RedisServer:
    """One redis-server process; `restart()` brings it back empty on the same port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError(
                "redis-server not found on PATH (Debian: apt-get install redis-server)"
            )
        self.executable = exe
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self) -> None:
        fixed = bool(self.port)
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port()
            if self._start_once():
                return
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail(self._log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port; the data is gone (no persistence)."""
        self.stop()
        self.start()

    @property
    def _log(self) -> Path:
        return self.workdir / "redis.log"

    def _start_once(self) -> bool:
        argv = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self._log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=child_preexec(),  # a killed pytest must not leave it running
        )
        if wait_for_port(self.port, self.proc) and self._ping():
            return True
        self.stop()
        return False

    def _ping(self) -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False
