"""Which function runs each request: `run(ctx, request)` for callers that hold any request.

The Celery tasks and `zrepq-local` build a request (`requests.py`) and hand it here with the
`Context` they built; the function it names does the work (`sync.sync`, `init.init`, ...).
A caller that knows its verb can call that function directly, with the same arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import admin, expire, handback, init, pause, report, roles, rollback, sync
from .context import Context
from .requests import (
    ChangeconfigRequest,
    ClearRequest,
    ExpireRequest,
    FailoverRequest,
    HandbackRequest,
    InitRequest,
    LastsentRequest,
    ListRequest,
    PauseRequest,
    RefreshRequest,
    Request,
    ResumeRequest,
    RollbackRequest,
    SentsyncRequest,
    SnaponlyRequest,
    StatusRequest,
    SynconlyRequest,
    SyncRequest,
    TakeoverRequest,
    UptodateRequest,
)

# A request type -> the function that runs it.
VERBS: dict[type, Callable[[Context, Any], Any]] = {
    InitRequest: init.init,
    SyncRequest: sync.sync,
    SynconlyRequest: sync.synconly,
    RollbackRequest: rollback.rollback,
    RefreshRequest: sync.refresh,
    SnaponlyRequest: admin.snaponly,
    ExpireRequest: expire.expire,
    FailoverRequest: roles.failover,
    TakeoverRequest: roles.takeover,
    StatusRequest: report.status,
    ListRequest: report.listing,
    LastsentRequest: report.lastsent,
    UptodateRequest: report.uptodate,
    ClearRequest: admin.clear,
    ChangeconfigRequest: admin.changeconfig,
    SentsyncRequest: admin.sentsync,
    PauseRequest: pause.pause,
    ResumeRequest: pause.resume,
    HandbackRequest: handback.handback,
}


def run(ctx: Context, request: Request) -> Any:
    """Run the verb for `request` (a task's model is its request: found by its base class)."""
    for cls in type(request).__mro__:
        verb = VERBS.get(cls)
        if verb is not None:
            return verb(ctx, request)
    raise TypeError(f"no verb for {type(request).__name__}")


def record(value: Any) -> Any:
    """A verb's result as JSON-able data: its record (`to_dict`), or the plain value."""
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value
