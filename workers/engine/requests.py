"""What each zrep command takes: one frozen, validated model per verb.

These are the only place a verb's arguments are typed. The engine's verbs take them
(`sync.sync(ctx, SyncRequest(fs=...))`), `zrepq-local` builds them from zrep's flags, and
the queue's task models (`tasks/contract.py`) are these plus the envelope (`host`, `tag`),
so `zrepq`, the Python API and any service calling a task by name send exactly these fields.

Every name is checked against ZFS's naming rules when the model is built, before any argv
exists (`names.py`): a bad one raises `ValidationError` saying why. The models are strict
(JSON types, nothing coerced, no unknown field): `parse` reports such a problem as a
`ValidationError` too.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import ValidationError as SchemaError

from .errors import ValidationError
from .names import validate_dataset, validate_host, validate_snapshot, validate_tag


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
SnapshotName = Annotated[str, AfterValidator(_snap)]
FsOrSnap = Annotated[str, AfterValidator(_fs_or_snap)]
Tag = Annotated[str, AfterValidator(validate_tag)]
Datasets = Annotated[list[Dataset], Field(max_length=10_000)]

M = TypeVar("M", bound=BaseModel)


def problems(e: SchemaError) -> str:
    """pydantic's errors as one line: `fs: Field required; force: Input should be ...`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in e.errors()
    )


def parse(model: type[M], data: Any, what: str) -> M:
    """`data` (a JSON object) as `model`, or `ValidationError` naming `what` and each problem."""
    if not isinstance(data, dict):
        raise ValidationError(f"{what}: arguments must be a JSON object of keyword arguments")
    try:
        return model.model_validate(data)
    except SchemaError as e:
        raise ValidationError(f"{what}: invalid arguments: {problems(e)}") from None


def narrow(model: type[M], source: BaseModel) -> M:
    """`source`'s fields that `model` has, as `model` (a legacy task form as its request)."""
    return model.model_validate(source.model_dump(include=set(model.model_fields)))


class Request(BaseModel):
    """A name that breaks ZFS's rules raises `ValidationError` as the model is built; other
    problems (a wrong type, an unknown field) pydantic's error: build a request from input
    with `parse`, which turns that into a `ValidationError` too."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OnFs(Request):
    """A command on one filesystem or volume of this host."""

    fs: Dataset


class Receive(OnFs):
    """A command that streams into a receiving side."""

    force: bool = False  # receive with -F: roll the destination back to the base first
    resume: bool | None = None  # resumable receive (`recv -s`); None: the config's (on)


class SyncFlags(Request):
    """`sync`'s own options, shared by `sync all`."""

    force: bool = False  # receive with -F
    resume: bool | None = None  # resumable receive; None: the config's (on)
    changed_only: bool = False  # -c: only a timestamp when nothing was written
    quiet_secs: int | None = Field(default=None, ge=30)  # -q: skip a busy fs synced lately


class InitRequest(Receive):
    dest_host: Host
    dest_fs: Dataset


class SyncRequest(SyncFlags, OnFs):
    ignore_pause: bool = False  # sync a paused fs anyway


class SynconlyRequest(Receive):
    """Send the newest zrep snapshot that exists; make none."""

    ignore_pause: bool = False


class RefreshRequest(Receive):
    """Pull: run on the standby, snapshot on the master, stream here."""


class RollbackRequest(Request):
    """zrep's `sync fs@zrep_NNNNNN`: roll the destination back to that snapshot."""

    snapshot: SnapshotName


class SnaponlyRequest(OnFs):
    pass


class ExpireRequest(OnFs):
    local_only: bool = False  # -L: this side only


class RoleRequest(Request):
    """What failover and takeover take."""

    fs: FsOrSnap  # fs@snap: roll back to that snapshot
    local_only: bool = False  # -L: this side only; the other side is gone or done
    other_host: Host | None = None  # the other side, if not the one the properties name
    force: bool = False  # takeover -L while the other side claims master (it is dead)


class FailoverRequest(RoleRequest):
    """Run on the master: it becomes the standby, then asks the other side to take over."""


class TakeoverRequest(RoleRequest):
    """Run on the standby: asks the master to fail over, or with -L becomes master itself."""


class StatusRequest(Request):
    fs: Datasets = Field(default_factory=list)  # none: every fs this host is master of
    all: bool = False  # -a: every zrep fs, masters and standbys
    verbose: bool = False  # -v: also each master's standby's keystatus (one call per host)


class ListRequest(Request):
    fs: Datasets = Field(default_factory=list)  # none: every zrep fs
    verbose: bool = False  # -v: every local/received property, and the last sent snapshot
    masters_only: bool = False  # -L
    snapshots: bool = False  # -s: the snapshots, as `zfs list` prints them


class LastsentRequest(OnFs):
    pass


class UptodateRequest(OnFs):
    pass


class ClearRequest(OnFs):
    pass


class ChangeconfigRequest(OnFs):
    other_host: Host
    other_fs: Dataset
    force: bool = False  # -f: even without zrep snapshots on fs
    dest_side: bool = False  # -d: fs is the standby, other_* name the master


class SentsyncRequest(Request):
    snapshot: SnapshotName
    local_only: bool = False


class PauseRequest(OnFs):
    reason: str = Field(default="", max_length=200)
    by: str | None = Field(default=None, max_length=100)  # None: user@host
    expire: bool = False  # pause expire too


class ResumeRequest(OnFs):
    """Take the pause off."""


class HandbackRequest(OnFs):
    local_only: bool = False  # this side only (the other one is gone)
