"""The zrepq error tree.

Every error names the host and dataset it concerns (when known) and says whether retrying the
same operation later can succeed (`retryable`). Across the queue errors travel as records
(`to_record`), never as pickled exceptions.

The classes under `CommandError` name what zfs said (`zfs_errors.py` reads its stderr, the
only place that does); they keep their parent's `kind`, so a record reads as it always did.

    ZrepqError
    ├── ValidationError        bad dataset/snapshot/host/tag name or argument; nothing ran
    ├── ConfigError            bad configuration value
    ├── NotConfigured          dataset is not set up for replication (no zrep:* properties)
    │   └── DatasetMissing     the dataset itself does not exist (read before anything ran)
    ├── StateError             the datasets are not in a state the operation accepts
    │   ├── SplitBrain         both sides claim to be master, or the other side was written
    │   └── Conflict           the snapshot histories do not allow the requested send
    ├── LockHeld               someone else holds the lease (or a live local zrep holds the fs)
    ├── LockLost               our lease expired or could not be renewed while we worked
    ├── CommandError           a command exited non-zero (argv, exit code, stderr)
    │   ├── CommandTimedOut    a control command ran past its timeout (retryable)
    │   ├── NoSuchDataset      zfs: the dataset or snapshot does not exist
    │   ├── HoldExists         zfs hold: the snapshot already has that hold
    │   ├── BookmarkExists     zfs bookmark: a bookmark of that name exists
    │   ├── NoSuchHold         zfs release: the snapshot has no such hold
    │   ├── DatasetBusy        zfs: dataset is busy (a hold, a mount, a running receive)
    │   ├── PermissionDenied   zfs: permission denied (no `zfs allow` delegation)
    │   └── PipelineError      a stage of send | filters | ssh recv failed
    │       ├── StaleResumeToken  `send -t` refused the token (its snapshot is gone, ...)
    │       └── PoolNeedsUpgrade  `recv` refused the stream (`-s`: no extensible_dataset)
    ├── HostUnreachable        cannot connect to a host (retryable)
    │   └── HostKeyError       host key unknown or changed (never retryable)
    └── Cancelled              the operation was stopped (lease lost, shutdown)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ZrepqError(Exception):
    """Base of every error zrepq raises on purpose."""

    kind = "error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None = None,
        host: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.dataset = dataset
        self.host = host
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message

    def to_record(self) -> dict[str, Any]:
        """A JSON-able description, the form errors take across the queue."""
        return {
            "kind": self.kind,
            "message": self.message,
            "dataset": self.dataset,
            "host": self.host,
            "retryable": self.retryable,
        }


class ValidationError(ZrepqError):
    kind = "validation"


class ConfigError(ZrepqError):
    kind = "config"


class NotConfigured(ZrepqError):
    kind = "not-configured"


class DatasetMissing(NotConfigured):
    kind = "missing"


class StateError(ZrepqError):
    kind = "state"


class SplitBrain(StateError):
    kind = "split-brain"


class Conflict(StateError):
    kind = "conflict"


class LockHeld(ZrepqError):
    kind = "locked"
    retryable = True

    def __init__(self, message: str, *, holder: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.holder = holder


class LockLost(ZrepqError):
    kind = "lock-lost"
    retryable = True


class Cancelled(ZrepqError):
    kind = "cancelled"
    retryable = True


class CommandError(ZrepqError):
    """A command ran and exited non-zero. `stderr` is kept whole; the message has its gist."""

    kind = "command"

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr

    def to_record(self) -> dict[str, Any]:
        rec = super().to_record()
        rec.update(argv=list(self.argv), returncode=self.returncode, stderr=self.stderr)
        return rec


class CommandTimedOut(CommandError):
    """Retryable: a command that hung (a busy pool, a slow link) may well finish next time."""

    kind = "timeout"
    retryable = True


class NoSuchDataset(CommandError):
    pass


class HoldExists(CommandError):
    pass


class NoSuchHold(CommandError):
    pass


class DatasetBusy(CommandError):
    pass


class PermissionDenied(CommandError):
    pass


class BookmarkExists(CommandError):
    pass


class PipelineError(CommandError):
    kind = "pipeline"


class StaleResumeToken(PipelineError):
    pass


class PoolNeedsUpgrade(PipelineError):
    pass


class PartialReceiveInWay(PipelineError):
    """The receive was refused at its start: the destination holds a partial receive."""


class HostUnreachable(ZrepqError):
    kind = "unreachable"
    retryable = True


class HostKeyError(HostUnreachable):
    kind = "host-key"
    retryable = False
