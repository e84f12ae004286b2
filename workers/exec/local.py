"""Control commands on this host: argv, no shell, each in its own process group."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence

from workers.engine.errors import CommandError
from workers.engine.ports import CommandResult
from workers.exec.procs import child_argv, describe_status, stop_group

log = logging.getLogger(__name__)

# After a timeout the group gets SIGTERM, then SIGKILL once this many seconds pass.
KILL_GRACE = 2.0


class LocalRunner:
    """`ports.Runner` for the host the worker runs on.

    `env` is laid over the worker's own environment (tests use it to put the stand-in `zfs`
    first on PATH and point it at its pool directory).
    """

    def __init__(self, host: str, env: Mapping[str, str] | None = None) -> None:
        self._host = host
        self._env = {**os.environ, **env} if env else None

    @property
    def host(self) -> str:
        return self._host

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        argv = tuple(argv)
        if not argv:
            raise CommandError("empty command", host=self._host)
        log.debug("run on %s: %s", self._host, shlex.join(argv))
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
            stderr = f"{argv[0]}: {exc.strerror}"
            result = CommandResult(self._host, argv, code, "", stderr)
            if check:
                raise command_error(result) from None
            return result
        start = time.monotonic()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc.pid, [proc], KILL_GRACE)
            out, err = proc.communicate()
            raise timeout_error(self._host, argv, timeout or 0.0, _text(err)) from None
        except BaseException:
            # KeyboardInterrupt, a Celery soft time limit...: never leave the child behind.
            stop_group(proc.pid, [proc], KILL_GRACE)
            raise
        result = CommandResult(self._host, argv, proc.returncode, _text(out), _text(err))
        log.debug(
            "%s on %s: %s in %.3fs",
            argv[0],
            self._host,
            describe_status(proc.returncode),
            time.monotonic() - start,
        )
        if check and result.returncode != 0:
            raise command_error(result)
        return result

    def close(self) -> None:
        """Nothing is kept open between commands."""


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def first_line(text: str) -> str:
    """The first non-blank line, the gist of a command's stderr."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def command_name(argv: Sequence[str]) -> str:
    """`zfs get`: the program and its sub-command, enough to recognise a command in a message."""
    words = list(argv[:2]) if len(argv) > 1 and not argv[1].startswith("-") else list(argv[:1])
    return " ".join(words)


def command_error(result: CommandResult) -> CommandError:
    """The error for a command that ran and failed; shared by the local and remote runners."""
    gist = first_line(result.stderr) or "(no error output)"
    return CommandError(
        f"`{command_name(result.argv)}` on {result.host} failed "
        f"({describe_status(result.returncode)}): {gist}",
        argv=result.argv,
        returncode=result.returncode,
        stderr=result.stderr,
        host=result.host,
    )


def timeout_error(host: str, argv: Sequence[str], timeout: float, stderr: str) -> CommandError:
    # Retryable: a command that hung (a busy pool, a slow link) may well finish next time.
    return CommandError(
        f"`{command_name(argv)}` on {host} timed out after {timeout:g}s",
        argv=argv,
        returncode=None,
        stderr=stderr,
        host=host,
        retryable=True,
    )
