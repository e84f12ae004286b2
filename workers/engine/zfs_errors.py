"""What zfs says on stderr, as typed errors: the only place zfs's words are matched.

OpenZFS reports a failure as text, one line per object for a command that names several
(`zfs release TAG a@1 a@2` goes on past a snapshot that fails and reports each one). The
markers below are its words (libzfs's messages, the same in 2.1 and 2.3; the stand-in prints
them too); each maps to an error class in `errors.py`. A class keeps its parent's `kind`, so
an error record reads as it always did: the class only lets the engine say what happened
(`except NoSuchHold`) instead of matching text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from . import delegation
from .errors import (
    BookmarkExists,
    CommandError,
    DatasetBusy,
    HoldExists,
    NoSuchDataset,
    NoSuchHold,
    PartialReceiveInWay,
    PermissionDenied,
    PipelineError,
    PoolNeedsUpgrade,
    StaleResumeToken,
)

E = TypeVar("E", bound=CommandError)

# Control commands: the first line that has one of these says what went wrong.
_MARKERS: tuple[tuple[type[CommandError], tuple[str, ...]], ...] = (
    (NoSuchDataset, ("does not exist", "could not find any snapshots to destroy")),
    (HoldExists, ("tag already exists",)),
    (BookmarkExists, ("bookmark exists",)),
    (NoSuchHold, ("no such tag",)),
    (DatasetBusy, ("dataset is busy",)),
    (PermissionDenied, ("permission denied",)),
)

# A resumed stream (`zfs send -t TOKEN`) whose token the sending side refuses: its snapshot
# is gone or was replaced, or the token does not parse. Whichever stage reported it.
_STALE_TOKEN = (
    "no longer the same snapshot",
    "does not exist",
    "resume token is corrupt",
    "invalid resume token",
    "cannot resume send",
    "kernel modules must be upgraded",
)
# `zfs set`/`zfs inherit` of a mount option (readonly) of a mounted filesystem by a user that
# is not root: the property is set, libzfs's remount is refused (only root mounts on Linux).
NOT_REMOUNTED = ("property may be set but unable to remount filesystem", "insufficient privileges")
# What libzfs refuses on a command's behalf, by the words of its refusal: `zfs send -I`/`-R`
# take temporary holds (`cannot hold: permission denied`, then `cannot send`).
_REFUSED_FOR = (("cannot hold", ("hold",)), ("cannot release", ("release",)))
# libzfs's words when mount(2) itself refuses a user that is not root (Linux lets only root
# mount): `mount` granted or not (OpenZFS 2.1.11 and 2.3.2).
_ROOT_ONLY = ("failed to create mountpoint: permission denied", "insufficient privileges")
# `zfs recv` on a pool without a feature the stream needs (`-s`: extensible_dataset).
NEEDS_UPGRADE = "pool must be upgraded to receive this stream"


def _kind_of_line(line: str) -> type[CommandError] | None:
    lowered = line.lower()
    for cls, markers in _MARKERS:
        if any(m in lowered for m in markers):
            return cls
    return None


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def says(stderr: str, kind: type[CommandError]) -> bool:
    """Does any line of `stderr` report `kind`?"""
    return any(_kind_of_line(line) is kind for line in _lines(stderr))


def only(stderr: str, kinds: Sequence[type[CommandError]]) -> bool:
    """Does every line of `stderr` report one of `kinds` (and is there at least one)?

    For the idempotent commands: a `zfs release` whose every failure is "no such tag" or
    "dataset does not exist" released everything there was to release."""
    lines = _lines(stderr)
    return bool(lines) and all(_kind_of_line(line) in kinds for line in lines)


def only_remount_refused(stderr: str) -> bool:
    """Did the command do its work, and only the remount after it fail? (`NOT_REMOUNTED`:
    `cannot mount 'fs': Insufficient privileges`, then from `zfs set` only `property may be
    set but unable to remount filesystem`, as OpenZFS 2.1.11 and 2.3.2 say it.)"""
    lines = [line.lower() for line in _lines(stderr)]
    return bool(lines) and all(any(m in line for m in NOT_REMOUNTED) for line in lines)


def root_only(stderr: str) -> bool:
    """Did zfs fail because only root may mount, whatever `zfs allow` granted?"""
    text = stderr.lower()
    return "cannot mount" in text and any(m in text for m in _ROOT_ONLY)


def _hint(err: CommandError, stderr: str) -> str:
    """delegation.hint for `err`: none when only root could have done it (the hint would
    send the admin astray), the permission libzfs's refusal names when it is not the
    command's own (`hold` for a send)."""
    if root_only(stderr):
        return ""
    denied = [ln for ln in stderr.lower().splitlines() if "permission denied" in ln]
    perms = next((p for w, p in _REFUSED_FOR if denied and denied[0].startswith(w)), None)
    return delegation.hint(err.argv or (), err.host, perms)


def typed(err: CommandError) -> CommandError:
    """`err` as the class its stderr names (the same message and fields), else `err`.

    Only a plain `CommandError` is read: a timeout, a pipeline's error or one already typed
    stays what it is."""
    if type(err) is not CommandError:
        return err
    cls = next((k for line in _lines(err.stderr) if (k := _kind_of_line(line))), None)
    if cls is PermissionDenied:
        err.message += _hint(err, err.stderr or "")
    return err if cls is None else _as(cls, err)


# `zfs send -I`/`-R` refusing a snapshot: a warning, the next one tried, and an empty
# package written that `zfs recv` takes as nothing to receive: on OpenZFS 2.1.11 both exit 0.
_SEND_REFUSED = "warning: cannot send '"


def refused_send(send_stderr: str) -> str | None:
    """The line of a finished send's stderr that says a snapshot was not sent, if any."""
    return next((ln for ln in _lines(send_stderr) if ln.startswith(_SEND_REFUSED)), None)


# What libzfs says when a receive (not `-A`, not a resume) meets a partial receive's state.
PARTIAL_IN_WAY = 'contains partially-complete state from "zfs receive -s"'


def typed_stream(err: PipelineError, *, resuming: bool) -> PipelineError:
    """A failed stream's error as the class its stderr names, else `err`.

    `resuming`: the stream was `zfs send -t` (any refusal of the token makes it stale)."""
    if type(err) is not PipelineError:
        return err
    text = err.stderr or ""
    if resuming and any(m in text.lower() for m in _STALE_TOKEN):
        return _as(StaleResumeToken, err)
    if NEEDS_UPGRADE in text:
        return _as(PoolNeedsUpgrade, err)
    if PARTIAL_IN_WAY in text:
        return _as(PartialReceiveInWay, err)
    if "permission denied" in text.lower():
        err.message += _hint(err, text)  # stays a PipelineError
    return err


def _as(cls: type[E], err: CommandError) -> E:
    typed_err = cls(
        err.message,
        argv=err.argv,
        returncode=err.returncode,
        stderr=err.stderr,
        dataset=err.dataset,
        host=err.host,
        retryable=err.retryable,
    )
    typed_err.__traceback__ = err.__traceback__
    return typed_err
