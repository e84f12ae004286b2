"""The one place where argv becomes text for a remote shell.

Locally nothing is ever quoted: commands run from argv with no shell. Over SSH the remote
side always gets a string that its login shell parses, so every remote command (paramiko
control commands and the OpenSSH data path alike) is built here with `shlex.join`, which
single-quotes every word that is not plainly safe. The remote login shell is assumed to be
POSIX-like (sh, dash, bash, ksh, zsh), as zrep assumes.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from workers.engine.errors import ValidationError

# Marker a remote pipeline writes on stderr for every stage but the last: POSIX sh has no
# portable `pipefail`, so without it a failed `zfs send` on the far side of `| zstd` would
# look like success and the blame would land on the receiver.
STAGE_STATUS_MARK = "zrepq-stage-exit"
_SHELL_OPERATORS = frozenset({"|", "||", "&&", "&", ";", ">", ">>", "<", "<<", "2>", "2>&1"})
_STATUS_LINE = re.compile(rf"^{STAGE_STATUS_MARK} (\d+) (\d+)$")


def remote_command(argv: Sequence[str], *, stdin_null: bool = False) -> str:
    """`argv` as one remote shell command line; each word arrives at the program unchanged.

    `stdin_null` adds `</dev/null` (what `ssh -n` does), for control commands that read no
    input: the remote shell closes stdin itself, so the client never has to send EOF.
    """
    if not argv:
        raise ValidationError("empty command")
    line = shlex.join(argv)
    return f"{line} </dev/null" if stdin_null else line


def remote_pipeline(stages: Sequence[Sequence[str]]) -> str:
    """`a | b | c` for the remote shell, every stage but the last reporting its exit status.

    Each reporting stage becomes `{ a; printf '\\nzrepq-stage-exit 0 %s\\n' "$?" >&2; }`; the
    status of the last one is the shell's (and so ssh's) exit status. See `stage_statuses`.
    """
    if not stages:
        raise ValidationError("empty pipeline")
    if len(stages) == 1:
        return remote_command(stages[0])
    parts = [
        f"{{ {remote_command(argv)}; printf '\\n{STAGE_STATUS_MARK} {i} %s\\n' \"$?\" >&2; }}"
        for i, argv in enumerate(stages[:-1])
    ]
    parts.append(remote_command(stages[-1]))
    return " | ".join(parts)


def stage_statuses(stderr_lines: Sequence[str]) -> dict[int, int]:
    """The statuses reported by `remote_pipeline`'s markers, by stage index."""
    found: dict[int, int] = {}
    for line in stderr_lines:
        m = _STATUS_LINE.match(line)
        if m:
            found[int(m.group(1))] = int(m.group(2))
    return found


def is_status_line(line: str) -> bool:
    return _STATUS_LINE.match(line) is not None


def remote_batch(argvs: Sequence[Sequence[str]], mark: str) -> str:
    """Several commands as one remote shell script, run in order until one exits non-zero.

    Before each command the script writes `\\nMARK I\\n` on stdout and on stderr, after it
    `\\nMARK status I S\\n` on stderr; the rest is the command's own output, so each one's
    exit status, stdout and stderr come back separately (`batch_outputs`). `mark` must not
    occur in any output: a random token. The script itself exits 0.
    """
    if not argvs:
        raise ValidationError("empty batch")
    m = shlex.quote(mark)
    lines = ["f=0"]
    for i, argv in enumerate(argvs):
        lines.append(
            f"printf '\\n%s %d\\n' {m} {i}; printf '\\n%s %d\\n' {m} {i} >&2; "
            f"if [ $f = 0 ]; then {remote_command(argv, stdin_null=True)}; s=$?; "
            f"printf '\\n%s status %d %d\\n' {m} {i} $s >&2; [ $s = 0 ] || f=1; fi"
        )
    lines.append("exit 0")
    return "\n".join(lines)


def batch_outputs(stdout: str, stderr: str, mark: str) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of each command of a `remote_batch` that ran, in order.
    A command whose status line is missing (the script was cut) ends the list."""
    outs = _sections(stdout, mark)
    found: list[tuple[int, str, str]] = []
    for i, section in enumerate(_sections(stderr, mark)):
        err, sep, tail = section.rpartition(f"\n{mark} status {i} ")
        if not sep or not tail.rstrip("\n").lstrip("-").isdigit():
            break
        found.append((int(tail.rstrip("\n")), outs[i] if i < len(outs) else "", err))
    return found


def _sections(text: str, mark: str) -> list[str]:
    """The text after each `\\nMARK I\\n` marker, up to the next one."""
    parts = re.split(rf"\n{re.escape(mark)} \d+\n", text)
    return parts[1:]


def filter_argv(text: str) -> tuple[str, ...]:
    """A ZREP_OUTFILTER/ZREP_INFILTER string as argv: split like a shell, no shell features."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValidationError(f"cannot parse filter {text!r}: {exc}") from None
    if not argv:
        raise ValidationError(f"empty filter {text!r}")
    operators = [w for w in argv if w in _SHELL_OPERATORS]
    if operators:
        # Without a shell these would reach the program as arguments: say so instead.
        raise ValidationError(
            f"filter {text!r} uses shell operator {operators[0]!r}; filters are one program "
            "and its arguments (wrap a pipeline in a script)"
        )
    return argv
