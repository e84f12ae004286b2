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

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.auth.signing import HEADER as AUTH_HEADER
from workers.auth.signing import KeyFileError
from workers.auth.signing import generate as generate_keys
from workers.engine import requests as r
from workers.engine.errors import HostUnreachable, ValidationError, ZrepqError
from workers.engine.names import validate_host
from workers.engine.requests import Dataset, FsOrSnap, Host, Tag, parse

# Every Redis key and queue name zrepq gives, for producers (their one home: workers/keys.py).
from workers.keys import (
    BEAT_PREFIX,
    DEFAULT_QUEUE,
    HOST_PREFIX,
    PROBE_TASK,
    QUEUE_PREFIX,
    SYNCS_PREFIX,
    host_key,
    node_host,
    node_name,
    queue_name,
    sync_record_field,
    syncs_key,
)


def queue_for(host: str) -> str:
    """Each storage host consumes exactly one queue: tasks for its datasets go there."""
    return queue_name(validate_host(host))


class Args(BaseModel):
    """Common to every task: the host whose worker must run it, and the replication tag."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    host: Host
    tag: Tag = "zrep"


# Each task's arguments: the envelope, then the verb's own (`workers/engine/requests.py`,
# where every field is typed once), then what only the queue needs.


class InitArgs(r.InitRequest, Args):
    pass


class SyncArgs(r.SyncRequest, Args):
    """`zrep.sync`; also its legacy forms, kept for services that call it so: `fs@snap`
    (now `zrep.rollback`) and `snapshot=false` (now `zrep.synconly`)."""

    fs: FsOrSnap  # the legacy `fs@snap` too
    snapshot: bool = True  # legacy: false is synconly
    record_errors: bool = False  # return a failure record instead of failing (sync all)


class SynconlyArgs(r.SynconlyRequest, Args):
    record_errors: bool = False


class RollbackArgs(r.RollbackRequest, Args):
    pass


class SyncAllArgs(r.SyncFlags, Args):
    # Every tag this host is master for (several standbys per dataset); false: the envelope's
    # tag only, as zrep's `sync all`.
    every_tag: bool = True


class SnaponlyArgs(r.SnaponlyRequest, Args):
    pass


class ExpireArgs(r.ExpireRequest, Args):
    # None: every fs this host is master of ("all": every zrep fs)
    fs: Dataset | None = None  # type: ignore[assignment]
    all: bool = False


class RoleSide(BaseModel):
    """What one half of a failover/takeover did on its host (for the caller's report)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    host: Host
    dataset: Dataset
    role: Literal["master", "standby"]
    synced: FsOrSnap | None = None  # the final snapshot sent before the switch
    message: str = Field(default="", max_length=500)


class _Handover(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # Set by the worker that hands the other half over (task.replace): what the earlier
    # halves did, so the final result reports every side.
    prior: list[RoleSide] = Field(default_factory=list, max_length=4)


class FailoverArgs(_Handover, r.FailoverRequest, Args):
    pass


class TakeoverArgs(_Handover, r.TakeoverRequest, Args):
    pass


class RefreshArgs(r.RefreshRequest, Args):
    pass


class StatusArgs(r.StatusRequest, Args):
    # verbose: the text is zrep's -v lines, and zrepq's facts under each.
    # every_tag: the rows of every tag this host is master for (`status --fleet`).
    every_tag: bool = False


class ListArgs(r.ListRequest, Args):
    pass


class LastsentArgs(r.LastsentRequest, Args):
    pass


class UptodateArgs(r.UptodateRequest, Args):
    pass


class ClearArgs(r.ClearRequest, Args):
    pass


class ChangeConfigArgs(r.ChangeconfigRequest, Args):
    pass


class PauseArgs(r.PauseRequest, Args):
    pass


class ResumeArgs(r.ResumeRequest, Args):
    pass


class HandbackArgs(r.HandbackRequest, Args):
    pass


class SentSyncArgs(r.SentsyncRequest, Args):
    pass


# Task name -> argument schema. The names are the contract; never rename one.
INIT = "zrep.init"
SYNC = "zrep.sync"
SYNCONLY = "zrep.synconly"
ROLLBACK = "zrep.rollback"  # zrep's `sync fs@snap`
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

# Tasks whose outcome the worker keeps in `zrepq:syncs:HOST` (tasks/ops.py), keyed by the `fs`
# of the message (a rollback's `snapshot` names it too).
RECORDED = (INIT, SYNC, SYNCONLY, ROLLBACK)

SCHEMAS: dict[str, type[Args]] = {
    INIT: InitArgs,
    SYNC: SyncArgs,
    SYNCONLY: SynconlyArgs,
    ROLLBACK: RollbackArgs,
    SYNC_ALL: SyncAllArgs,
    SNAPONLY: SnaponlyArgs,
    EXPIRE: ExpireArgs,
    FAILOVER: FailoverArgs,
    TAKEOVER: TakeoverArgs,
    REFRESH: RefreshArgs,
    STATUS: StatusArgs,
    LIST: ListArgs,
    LASTSENT: LastsentArgs,
    UPTODATE: UptodateArgs,
    CLEAR: ClearArgs,
    CHANGECONFIG: ChangeConfigArgs,
    SENTSYNC: SentSyncArgs,
    PAUSE: PauseArgs,
    RESUME: ResumeArgs,
    HANDBACK: HandbackArgs,
}


def validate(name: str, kwargs: Any) -> Args:
    """Parse a task's JSON kwargs into its schema, or raise `ValidationError` saying why."""
    schema = SCHEMAS.get(name)
    if schema is None:
        raise ValidationError(f"unknown task {name!r}")
    return parse(schema, kwargs, name)


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def failed(error: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": error}


__all__ = [
    "AUTH_HEADER",
    "BEAT_PREFIX",
    "DEFAULT_QUEUE",
    "HOST_PREFIX",
    "PROBE_TASK",
    "QUEUE_PREFIX",
    "SCHEMAS",
    "SYNCS_PREFIX",
    "HostUnreachable",
    "KeyFileError",
    "ValidationError",
    "ZrepqError",
    "generate_keys",
    "host_key",
    "node_host",
    "node_name",
    "queue_for",
    "queue_name",
    "sync_record_field",
    "syncs_key",
    "validate",
]
