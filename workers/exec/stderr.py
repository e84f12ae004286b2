"""What a pipeline's stages print on stderr: kept for errors, read for progress and blame.

A stage's stderr is split in lines: `zfs send -P`'s progress lines are parsed and dropped,
a remote pipeline's exit-status markers are set aside (`quoting.remote_pipeline`), the rest
is kept (its first and last `_KEEP_LINES`) for the error message. An OpenSSH exit 255 is
judged from what ssh said (`ssh_connection_error`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from workers.engine.errors import HostKeyError, HostUnreachable
from workers.exec.progress import SendProgress
from workers.exec.quoting import is_status_line

_KEEP_LINES = 100  # stderr lines kept per stage, at the head and at the tail each


class StderrCapture:
    """A stage's stderr: split in lines, progress lines parsed and dropped, the rest kept."""

    def __init__(self, progress: SendProgress | None) -> None:
        self.progress = progress
        self.nbytes = 0
        self._partial = b""
        self._head: list[str] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=_KEEP_LINES)
        self._dropped = 0
        self.status_lines: list[str] = []

    def feed(self, data: bytes) -> None:
        self.nbytes += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def close(self) -> None:
        if self._partial:
            self._line(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""

    def _line(self, line: str) -> None:
        if self.progress is not None and self.progress.feed(line):
            return
        if is_status_line(line):
            self.status_lines.append(line)
            return
        if not line.strip():
            return
        if len(self._head) < _KEEP_LINES:
            self._head.append(line)
            return
        if len(self._tail) == self._tail.maxlen:
            self._dropped += 1
        self._tail.append(line)

    def text(self) -> str:
        lines = list(self._head)
        if self._dropped:
            lines.append(f"[... {self._dropped} lines omitted ...]")
        lines.extend(self._tail)
        return "\n".join(lines)


_HOST_KEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key for", "has changed")
_HOST_KEY_FAILED = ("Host key verification failed",)
_UNREACHABLE = (
    "Connection refused",
    "Connection timed out",
    "Could not resolve hostname",
    "No route to host",
    "Network is unreachable",
    "Connection closed by",
    "Connection reset by",
    "kex_exchange_identification",
    "Operation timed out",
)
_AUTH_FAILED = ("Permission denied (",)


def ssh_connection_error(host: str, stderr: str) -> HostUnreachable | None:
    """The error an OpenSSH exit 255 stands for, judged from its stderr; None if not one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = "; ".join(_relevant(lines))

    def has(markers: Iterable[str]) -> bool:
        return any(m in line for m in markers for line in lines)

    if has(_HOST_KEY_FAILED) or has(_HOST_KEY_CHANGED):
        if has(_HOST_KEY_CHANGED):
            what = "has CHANGED (or is not the one known_hosts lists)"
        else:
            what = "is not in known_hosts"
        return HostKeyError(f"host key for {host} {what}: ssh said: {said}", host=host)
    if has(_AUTH_FAILED):
        return HostUnreachable(
            f"authentication to {host} failed: ssh said: {said}", host=host, retryable=False
        )
    if has(_UNREACHABLE):
        return HostUnreachable(f"cannot connect to {host}: ssh said: {said}", host=host)
    return None


def _relevant(lines: list[str]) -> list[str]:
    # ssh's host-key warning is a banner of '@' lines; keep the sentences.
    kept = [line for line in lines if not line.startswith("@") and not is_status_line(line)]
    return kept[:4]


# ssh's own chatter, never the reason a stage failed.
_NOISE = ("Warning: Permanently added", "** ", "Pseudo-terminal will not be allocated")


def gist(stderr: str) -> str:
    """The first line of `stderr` that says something about a failure."""
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith(_NOISE) and not line.startswith("@"):
            return line
    return ""
