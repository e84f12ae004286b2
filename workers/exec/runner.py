"""What every control-command runner shares: the `ports.Runner` contract, implemented once.

`LocalRunner` (a child process here) and `ParamikoRunner` (a channel on a cached SSH
connection) only differ in how a command is executed (`_execute`). The rest is here: the
argv check, the log lines, the timing, and the errors: a command that ran and failed is a
`CommandError` carrying argv, exit status and stderr; one that ran past its timeout is a
`CommandTimedOut` naming host and argv (retryable).
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Sequence

from workers.engine.errors import CommandError, CommandTimedOut
from workers.engine.ports import CommandResult, Runner
from workers.exec.procs import describe_status

log = logging.getLogger("workers.exec")


class BaseRunner:
    def __init__(self, host: str) -> None:
        self._host = host

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
        start = time.monotonic()
        status, out, err = self._execute(argv, timeout)
        result = CommandResult(self._host, argv, status, decoded(out), decoded(err))
        log.debug(
            "%s on %s: %s in %.3fs",
            argv[0],
            self._host,
            describe_status(status),
            time.monotonic() - start,
        )
        if check and status != 0:
            raise command_error(result)
        return result

    def run_many(
        self, argvs: Sequence[Sequence[str]], *, timeout: float | None = None
    ) -> list[CommandResult | CommandError]:
        """`ports.Runner.run_many`: here one after the other (a local command has no round
        trip to save); `ParamikoRunner` runs them as one remote script."""
        return run_in_turn(self, argvs, timeout)

    def _execute(self, argv: tuple[str, ...], timeout: float | None) -> tuple[int, bytes, bytes]:
        """Run `argv` to its end: (exit status, stdout, stderr); raise `timed_out(...)` after
        `timeout` seconds, `HostUnreachable` when the host cannot be reached."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing is kept open between commands."""


def run_in_turn(
    runner: Runner, argvs: Sequence[Sequence[str]], timeout: float | None
) -> list[CommandResult | CommandError]:
    """`ports.Runner.run_many` as separate `run`s, for a runner with no round trip to save."""
    done: list[CommandResult | CommandError] = []
    for argv in argvs:
        result = runner.run(argv, check=False, timeout=timeout)
        if result.returncode != 0:
            done.append(command_error(result))
            break
        done.append(result)
    return done


def decoded(data: bytes | None) -> str:
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
    """The error for a command that ran and failed."""
    gist = first_line(result.stderr) or "(no error output)"
    return CommandError(
        f"`{command_name(result.argv)}` on {result.host} failed "
        f"({describe_status(result.returncode)}): {gist}",
        argv=result.argv,
        returncode=result.returncode,
        stderr=result.stderr,
        host=result.host,
    )


def timed_out(host: str, argv: Sequence[str], timeout: float, stderr: bytes) -> CommandTimedOut:
    return CommandTimedOut(
        f"`{command_name(argv)}` on {host} timed out after {timeout:g}s: {shlex.join(argv)}",
        argv=argv,
        returncode=None,
        stderr=decoded(stderr),
        host=host,
    )
