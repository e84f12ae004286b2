"""Rules of the task bodies (`tasks/handlers.py`) that need no worker: a redelivered task and
its dead first run, the contract's failure record, the host registry kept up."""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from tasks import handlers
from tasks.errors import TaskFailed
from workers.engine import liveness
from workers.engine.errors import LockHeld
from workers.engine.locks import LockToken
from workers.keys import host_key


def _task(task_id: str | None) -> Any:
    return SimpleNamespace(request=SimpleNamespace(id=task_id))


def _engine(host: str, ttl: float | None = 4.0) -> Any:
    return SimpleNamespace(host=host, locks=SimpleNamespace(ttl=ttl) if ttl else object())


def test_a_redelivered_task_waits_for_its_dead_first_run_only() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    tid = "0b1f-task"
    held_by = f"na:{dead.pid}:sync/{tid}:abc"
    # The first delivery's process is gone: wait out its lease, then run.
    assert handlers._redelivery_wait(_task(tid), LockHeld("x", holder=held_by), _engine("na")) == 5
    # ... also when it ran on another worker (whose pids we cannot see).
    assert handlers._redelivery_wait(_task(tid), LockHeld("x", holder=held_by), _engine("nb"))
    # Alive here: a true duplicate delivery, reported as such (no waiting).
    alive = f"na:{os.getpid()}:sync/{tid}:abc"
    assert handlers._redelivery_wait(_task(tid), LockHeld("x", holder=alive), _engine("na")) is None
    # Someone else's lease: plain `locked`.
    other = LockHeld("x", holder=f"na:{dead.pid}:sync/another:abc")
    assert handlers._redelivery_wait(_task(tid), other, _engine("na")) is None
    assert (
        handlers._redelivery_wait(_task(None), LockHeld("x", holder=held_by), _engine("na")) is None
    )
    # Tokens that carry the holder's identity: judged by it, not by the bare pid.
    me = liveness.current_identity()
    assert me is not None
    mine = str(LockToken("na", os.getpid(), f"sync/{tid}", "n", me))
    assert handlers._redelivery_wait(_task(tid), LockHeld("x", holder=mine), _engine("na")) is None
    reused = str(LockToken("na", os.getpid(), f"sync/{tid}", "n", replace(me, start=me.start - 1)))
    assert handlers._redelivery_wait(_task(tid), LockHeld("x", holder=reused), _engine("na")) == 5


def test_sync_all_fails_with_the_contract_record() -> None:
    """A bad `zrep.sync_all` message fails with TaskFailed(record) like every other task."""
    with pytest.raises(TaskFailed) as e:  # the body (`run`), past the gate of tasks/guard.py
        handlers.sync_all.run(host="na; reboot")
    assert e.value.record["kind"] == "validation"
    assert "invalid host name" in e.value.record["message"]


class _Registry:
    """The host registry's keys, and every command sent to them."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.calls: list[str] = []

    def exists(self, key: str) -> int:
        self.calls.append(f"EXISTS {key}")
        return int(key in self.keys)


def test_a_worker_registers_again_when_redis_forgot_it(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _Registry()
    registered: list[Any] = []
    monkeypatch.setattr(handlers, "this_host", lambda: "hx")
    monkeypatch.setattr(handlers, "_registry_client", lambda pid: registry)
    monkeypatch.setattr(handlers, "_register_host", lambda sender=None: registered.append(sender))
    beat = SimpleNamespace(eventer=SimpleNamespace(hostname="zrepq@hx"))
    ready = threading.Event()
    monkeypatch.setattr(handlers, "_ready", ready)
    handlers._stay_registered(beat)  # still starting: its own registration comes at ready
    assert registered == []
    ready.set()
    handlers._stay_registered(beat)  # missing (Redis restarted empty): registers
    assert len(registered) == 1 and registered[0].hostname == "zrepq@hx"
    registry.keys[host_key("hx")] = "{}"
    registry.calls.clear()
    handlers._stay_registered(beat)  # present: one EXISTS of its own key, nothing else
    assert len(registered) == 1
    assert registry.calls == ["EXISTS zrepq:host:hx"]
