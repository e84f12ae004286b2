"""The task contract: names, queues, argument schemas. This is the public API of the queue.

Other services trigger zrepq with `send_task(NAME, kwargs={...}, queue=queue_for(host))` (or
Flower's `POST /api/task/send-task/NAME`) and no zrepq code. Every task takes keyword
arguments only, as JSON; the worker validates them with these schemas before it touches
anything, so a malformed or hostile message is rejected with a clear error and does nothing.
Every task returns a JSON record: `{"ok": true, "result": ...}` or `{"ok": false, "error":
{"kind", "message", "dataset", "host", "retryable"}}` (single-dataset tasks also fail in
Celery's sense, so Flower shows them red).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import ValidationError as SchemaError

from workers.engine.errors import HostUnreachable, ValidationError, ZrepqError
from workers.engine.names import validate_dataset, validate_host, validate_snapshot, validate_tag

# Every Redis key and queue name zrepq gives, for producers (their one home: workers/keys.py).
from workers.keys import (
    BEAT_PREFIX,
    DEFAULT_QUEUE,
    HOSTS_KEY,
    PROBE_TASK,
    QUEUE_PREFIX,
    SYNCS_KEY,
    node_host,
    node_name,
    queue_name,
    sync_record_field,
)


def queue_for(host: str) -> str:
    """Each storage host consumes exactly one queue: tasks for its datasets go there."""
    return queue_name(validate_host(host))


def _snap(value: str) -> str:
    validate_snapshot(value)
    return value


def _fs_or_snap(value: str) -> str:
    if "@" in value:
        validate_snapshot(value)
    else:
        validate_dataset(value)
    return value


Host = Annotated[str, AfterValidator(validate_host)]
Dataset = Annotated[str, AfterValidator(validate_dataset)]
Snapshot = Annotated[str, AfterValidator(_snap)]
FsOrSnap = Annotated[str, AfterValidator(_fs_or_snap)]
Tag = Annotated[str, AfterValidator(validate_tag)]


class Args(BaseModel):
    """Common to every task: the host whose worker must run it, and the replication tag."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    host: Host
    tag: Tag = "zrep"


class InitArgs(Args):
    fs: Dataset
    dest_host: Host
    dest_fs: Dataset
    force: bool = False
    resume: bool | None = None


class SyncArgs(Args):
    fs: FsOrSnap  # fs@snap rolls the destination back to that snapshot (zrep sync fs@snap)
    force: bool = False
    resume: bool | None = None
    changed_only: bool = False
    quiet_secs: int | None = Field(default=None, ge=30)
    snapshot: bool = True  # False: synconly
    ignore_pause: bool = False  # sync a paused fs anyway
    record_errors: bool = False  # return a failure record instead of failing (sync all)


class SyncAllArgs(Args):
    force: bool = False
    resume: bool | None = None
    changed_only: bool = False
    quiet_secs: int | None = Field(default=None, ge=30)


class FsArgs(Args):
    fs: Dataset


class ExpireArgs(Args):
    fs: Dataset | None = None  # None: every fs this host is master of ("all": every zrep fs)
    all: bool = False
    local_only: bool = False


class RoleSide(BaseModel):
    """What one half of a failover/takeover did on its host (for the caller's report)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    host: Host
    dataset: Dataset
    role: Literal["master", "standby"]
    synced: FsOrSnap | None = None  # the final snapshot sent before the switch
    message: str = Field(default="", max_length=500)


class RoleArgs(Args):
    fs: FsOrSnap
    local_only: bool = False
    other_host: Host | None = None
    force: bool = False  # takeover -L while the other side claims master (it is dead)
    # Set by the worker that hands the other half over (task.replace): what the earlier
    # halves did, so the final result reports every side.
    prior: list[RoleSide] = Field(default_factory=list, max_length=4)


class RefreshArgs(Args):
    fs: Dataset
    force: bool = False
    resume: bool | None = None


class StatusArgs(Args):
    fs: list[Dataset] = Field(default_factory=list, max_length=10_000)
    all: bool = False
    verbose: bool = False


class ListArgs(Args):
    fs: list[Dataset] = Field(default_factory=list, max_length=10_000)
    verbose: bool = False
    masters_only: bool = False
    snapshots: bool = False


class ChangeConfigArgs(Args):
    fs: Dataset
    other_host: Host
    other_fs: Dataset
    force: bool = False
    dest_side: bool = False


class PauseArgs(Args):
    fs: Dataset
    reason: str = Field(default="", max_length=200)
    by: str | None = Field(default=None, max_length=100)
    expire: bool = False  # pause expire too


class HandbackArgs(Args):
    fs: Dataset
    local_only: bool = False  # this side only (the other one is gone)


class SentSyncArgs(Args):
    snapshot: Snapshot
    local_only: bool = False


# Task name -> argument schema. The names are the contract; never rename one.
INIT = "zrep.init"
SYNC = "zrep.sync"
SYNC_ALL = "zrep.sync_all"
SYNC_ALL_SUMMARY = "zrep.sync_all_summary"
SNAPONLY = "zrep.snaponly"
EXPIRE = "zrep.expire"
FAILOVER = "zrep.failover"
TAKEOVER = "zrep.takeover"
REFRESH = "zrep.refresh"
STATUS = "zrep.status"
LIST = "zrep.list"
LASTSENT = "zrep.lastsent"
UPTODATE = "zrep.uptodate"
CLEAR = "zrep.clear"
CHANGECONFIG = "zrep.changeconfig"
SENTSYNC = "zrep.sentsync"
PAUSE = "zrep.pause"
RESUME = "zrep.resume"
HANDBACK = "zrep.handback"

SCHEMAS: dict[str, type[Args]] = {
    INIT: InitArgs,
    SYNC: SyncArgs,
    SYNC_ALL: SyncAllArgs,
    SNAPONLY: FsArgs,
    EXPIRE: ExpireArgs,
    FAILOVER: RoleArgs,
    TAKEOVER: RoleArgs,
    REFRESH: RefreshArgs,
    STATUS: StatusArgs,
    LIST: ListArgs,
    LASTSENT: FsArgs,
    UPTODATE: FsArgs,
    CLEAR: FsArgs,
    CHANGECONFIG: ChangeConfigArgs,
    SENTSYNC: SentSyncArgs,
    PAUSE: PauseArgs,
    RESUME: FsArgs,
    HANDBACK: HandbackArgs,
}


def validate(name: str, kwargs: Any) -> Args:
    """Parse a task's JSON kwargs into its schema, or raise `ValidationError` saying why."""
    schema = SCHEMAS.get(name)
    if schema is None:
        raise ValidationError(f"unknown task {name!r}")
    if not isinstance(kwargs, dict):
        raise ValidationError(f"{name}: arguments must be a JSON object of keyword arguments")
    try:
        return schema.model_validate(kwargs)
    except SchemaError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in e.errors()
        )
        raise ValidationError(f"{name}: invalid arguments: {problems}") from None


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def failed(error: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": error}


__all__ = [
    "BEAT_PREFIX",
    "DEFAULT_QUEUE",
    "HOSTS_KEY",
    "PROBE_TASK",
    "QUEUE_PREFIX",
    "SCHEMAS",
    "SYNCS_KEY",
    "HostUnreachable",
    "ValidationError",
    "ZrepqError",
    "node_host",
    "node_name",
    "queue_for",
    "queue_name",
    "sync_record_field",
    "validate",
]
