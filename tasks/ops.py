"""Operations support on the workers: the liveness probe task and the sync records.

- `zrepq.probe` runs nothing but proves that this host's queue is consumed
  (`zrepq-worker --check` sends it).
- After every `zrep.sync` / `zrep.init` the worker writes one record per dataset into its
  host's Redis hash `zrepq:syncs:HOST` (field `TAG:HOST:FS`): last attempt, last success,
  bytes, duration, failure counters and the last error. `zrepq metrics` turns them into
  Prometheus series and `zrepq status --fleet` shows them. Writing a record never fails a
  task.
- A record goes when its dataset leaves zrepq: `zrep.clear` and `zrep.handback` delete their
  dataset's (`_forget_sync`), and each `sync all` deletes this host's records of datasets its
  enumeration no longer finds (destroyed, renamed, failed over; `forget_unlisted`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection, Iterable
from functools import lru_cache
from typing import Any

from celery import Task
from celery.signals import task_postrun

from tasks import contract as c
from tasks.app import app, settings_of
from tasks.errors import TaskFailed
from tasks.registry import read_sync_records

log = logging.getLogger(__name__)

# Outcomes that are not a failure of the pair (as in `sync all`'s summary).
NOT_FAILURES = {"locked", "duplicate", "paused"}


@app.task(name=c.PROBE_TASK, bind=True)
def probe(self: Task[Any, Any], /, host: str = "", **_: Any) -> dict[str, Any]:
    from tasks.handlers import this_host

    me = this_host()
    if host and host != me:
        raise TaskFailed(
            {"kind": "validation", "message": f"probe for {host} reached {me}", "host": me}
        )
    return {"ok": True, "result": {"host": me, "pid": os.getpid(), "time": time.time()}}


@lru_cache(maxsize=1)
def _client(pid: int) -> Any:
    return settings_of(app).redis()


def _outcome(retval: Any) -> tuple[bool | None, dict[str, Any]]:
    """(success?, result or error record); None when it is neither (locked, paused...)."""
    if isinstance(retval, TaskFailed):
        err = retval.record
    elif isinstance(retval, BaseException):
        err = {"kind": "task", "message": f"{type(retval).__name__}: {retval}"}
    elif isinstance(retval, dict) and retval.get("ok"):
        res = retval.get("result")
        return True, res if isinstance(res, dict) else {}
    elif isinstance(retval, dict):
        err = retval.get("error") or {}
    else:
        return None, {}
    if err.get("kind") in NOT_FAILURES:
        return None, err
    return False, err


def update_record(
    old: dict[str, Any] | None,
    *,
    host: str,
    fs: str,
    tag: str,
    success: bool | None,
    data: dict[str, Any],
    task_id: str | None,
    now: float,
) -> dict[str, Any]:
    rec: dict[str, Any] = dict(old or {})
    rec.update(host=host, dataset=fs, tag=tag, last_attempt=now, last_task=task_id)
    rec.setdefault("failures", 0)
    rec.setdefault("consecutive_failures", 0)
    rec.setdefault("syncs", 0)
    if success:
        rec["syncs"] += 1
        rec["consecutive_failures"] = 0
        rec["last_status"] = data.get("status", "synced")
        if data.get("dest_host"):
            rec["dest"] = f"{data['dest_host']}:{data.get('dest_fs')}"
        rec["last_success"] = now
        rec["last_bytes"] = int(data.get("bytes_sent") or 0)
        rec["last_seconds"] = float(data.get("seconds") or 0.0)
        if data.get("snapshot"):
            rec["last_snapshot"] = data["snapshot"]
    elif success is False:
        rec["failures"] += 1
        rec["consecutive_failures"] += 1
        rec["last_status"] = "failed"
        rec["last_error"] = {
            "kind": data.get("kind"),
            "message": data.get("message"),
            "time": now,
            "task": task_id,
        }
    else:
        rec["last_status"] = data.get("kind") or "skipped"
    return rec


@task_postrun.connect
def _record_sync(
    sender: Any = None,
    task_id: str | None = None,
    task: Any = None,
    kwargs: dict[str, Any] | None = None,
    retval: Any = None,
    **_: Any,
) -> None:
    name = getattr(task, "name", None)
    if name in (c.CLEAR, c.HANDBACK) and isinstance(kwargs, dict):
        _forget_sync(name, kwargs, retval)
        return
    if name not in c.RECORDED or not isinstance(kwargs, dict):
        return
    host, fs = kwargs.get("host"), kwargs.get("fs", kwargs.get("snapshot"))
    if not isinstance(host, str) or not isinstance(fs, str):
        return
    try:
        from tasks.handlers import this_host

        if host != this_host():
            return  # a misrouted message: not ours to record
        fs = fs.split("@", 1)[0]
        tag = kwargs.get("tag") if isinstance(kwargs.get("tag"), str) else "zrep"
        success, data = _outcome(retval)
        client = _client(os.getpid())
        field, key = c.sync_record_field(str(tag), host, fs), c.syncs_key(host)
        raw = client.hget(key, field)
        old = json.loads(raw) if raw else None
        rec = update_record(
            old,
            host=host,
            fs=fs,
            tag=str(tag),
            success=success,
            data=data,
            task_id=task_id,
            now=time.time(),
        )
        client.hset(key, field, json.dumps(rec))
    except Exception as e:  # never let bookkeeping fail a task
        log.warning("could not record the outcome of %s %s: %s", name, fs, e)


def _forget_sync(name: str, kwargs: dict[str, Any], retval: Any) -> None:
    """After a `clear` or `handback` that succeeded: delete its dataset's record; for a
    handback of both sides, the other side's too (the pair's record is the master's)."""
    success, result = _outcome(retval)
    host, fs, tag = kwargs.get("host"), kwargs.get("fs"), kwargs.get("tag", "zrep")
    if not success or not all(isinstance(x, str) for x in (host, fs, tag)):
        return
    client = _client(os.getpid())
    try:
        client.hdel(c.syncs_key(str(host)), c.sync_record_field(str(tag), str(host), str(fs)))
    except Exception as e:  # never let bookkeeping fail a task
        log.warning("could not delete the sync record of %s %s: %s", name, fs, e)
    other_host, other_fs = result.get("other_host"), result.get("other_fs")
    if isinstance(other_host, str) and isinstance(other_fs, str):
        try:  # the other host's hash: refused where its Redis user may write only its own
            client.hdel(
                c.syncs_key(other_host), c.sync_record_field(str(tag), other_host, other_fs)
            )
        except Exception as e:  # its own next `sync all` drops it (`forget_unlisted`)
            log.info("left the sync record of %s:%s to its host: %s", other_host, other_fs, e)


# Delete a field only if it still holds the value read: a sync that wrote it meanwhile wins.
_DELETE_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def forget_unlisted(
    host: str, tags: Collection[str] | None, listed: Iterable[tuple[str, str]], since: float
) -> int:
    """Delete `host`'s records under `tags` (None: every tag) of datasets not in `listed`
    ((tag, fs) pairs: what `sync all` just found this host master of) and not written since
    `since` (a record written after the enumeration began is of a dataset it may have
    missed, an `init` finishing meanwhile). Returns how many went; never raises."""
    keep = {c.sync_record_field(tag, host, fs) for tag, fs in listed}
    gone = 0
    try:
        client = _client(os.getpid())
        key = c.syncs_key(host)
        for field, raw in client.hscan_iter(key):
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name in keep:
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if rec.get("host") != host or (tags is not None and rec.get("tag") not in tags):
                continue
            if float(rec.get("last_attempt") or 0) >= since:
                continue
            gone += int(client.eval(_DELETE_IF_UNCHANGED, 1, key, field, raw))
    except Exception as e:  # never let bookkeeping fail a task
        log.warning("could not drop the sync records of %s's vanished datasets: %s", host, e)
    return gone


def read_records(client: Any) -> list[dict[str, Any]]:
    """Every host's sync records in Redis (for metrics and `status --fleet`)."""
    return read_sync_records(client)
