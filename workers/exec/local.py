"""Control commands on this host: argv, no shell, each in its own process group."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from workers.exec.procs import child_argv, stop_group
from workers.exec.runner import BaseRunner, timed_out

# After a timeout the group gets SIGTERM, then SIGKILL once this many seconds pass.
KILL_GRACE = 2.0


class LocalRunner(BaseRunner):
    """`ports.Runner` for the host the worker runs on.

    `env` is laid over the worker's own environment (tests use it to put the stand-in `zfs`
    first on PATH and point it at its pool directory).
    """

    def __init__(self, host: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__(host)
        self._env = {**os.environ, **env} if env else None

    def _execute(self, argv: tuple[str, ...], timeout: float | None) -> tuple[int, bytes, bytes]:
        try:
            spawn, preexec = child_argv(argv, self._env)  # dies with us: see workers.exec.procs
            proc = subprocess.Popen(
                spawn,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                process_group=0,
                preexec_fn=preexec,
            )
        except OSError as exc:
            # Same shape as a shell's "command not found", which is what a remote runner sees.
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return code, b"", f"{argv[0]}: {exc.strerror}".encode()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc.pid, [proc], KILL_GRACE)
            out, err = proc.communicate()
            raise timed_out(self.host, argv, timeout or 0.0, err) from None
        except BaseException:
            # KeyboardInterrupt, a Celery soft time limit...: never leave the child behind.
            stop_group(proc.pid, [proc], KILL_GRACE)
            raise
        return proc.returncode, out, err
