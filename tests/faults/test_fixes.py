"""Focused regression tests for the defects the fault tier found (see docs/reliability.md).

Each is also exercised end to end by a scenario in this folder; these pin the exact rule.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from tasks import handlers
from tasks.errors import TaskFailed
from workers.engine import liveness
from workers.engine.errors import LockHeld
from workers.engine.locks import LockToken
from workers.exec.ssh_options import SshOptions
from workers.keys import HOSTS_KEY, lease_key
from workers.lease import RedisLocks, _Renewer


def test_a_lease_taken_after_waiting_is_valid_for_a_whole_ttl(redis_client: redis.Redis) -> None:
    """The wait for a lapsing lease must not count against the new holder's TTL.

    Before: validity was measured from when *waiting* began, so a lease taken after waiting
    ~TTL was declared lost at once (a re-run after a killed worker failed with lock-lost).
    """
    redis_client.set(lease_key("k"), "dead:1:sync/x:y", px=1500)  # a holder that died
    locks = RedisLocks(redis_client, owner="t", ttl=2.0)
    start = time.monotonic()
    with locks.hold(["k"], operation="sync", wait=5.0) as handle:
        assert 1.3 < time.monotonic() - start < 2.5
        time.sleep(max(0.0, start + 2.6 - time.monotonic()))  # past start + ttl - margin
        assert not handle.lost.is_set()
        assert redis_client.get(lease_key("k")) == handle.token.encode()


def test_lost_reads_as_set_once_the_lease_ran_out_even_before_the_watchdog_runs(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process continued after SIGSTOP runs its main thread first: `lost` must already say
    so, without waiting for the watchdog thread to be scheduled."""
    monkeypatch.setattr(_Renewer, "_renew", lambda self: None)  # no renewal,
    monkeypatch.setattr(_Renewer, "_watch", lambda self: None)  # no watchdog
    locks = RedisLocks(redis_client, owner="t", ttl=0.5)
    with locks.hold(["k"], operation="sync") as handle:
        assert not handle.lost.is_set()
        time.sleep(0.5)
        assert handle.lost.is_set()
        with pytest.raises(Exception, match="lost the lease"):
            handle.check()


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
    with pytest.raises(TaskFailed) as e:
        handlers.sync_all(host="na; reboot")
    assert e.value.record["kind"] == "validation"
    assert "invalid host name" in e.value.record["message"]


def test_a_worker_registers_again_when_redis_forgot_it(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[Any] = []
    monkeypatch.setattr(handlers, "this_host", lambda: "hx")
    monkeypatch.setattr(handlers, "_registry_client", lambda pid: redis_client)
    monkeypatch.setattr(handlers, "_register_host", lambda sender=None: registered.append(sender))
    beat = SimpleNamespace(eventer=SimpleNamespace(hostname="zrepq@hx"))
    ready = threading.Event()
    monkeypatch.setattr(handlers, "_ready", ready)
    handlers._stay_registered(beat)  # still starting: its own registration comes at ready
    assert registered == []
    ready.set()
    handlers._stay_registered(beat)  # missing (Redis restarted empty): registers
    assert len(registered) == 1 and registered[0].hostname == "zrepq@hx"
    redis_client.hset(HOSTS_KEY, "hx", "{}")
    handlers._stay_registered(beat)  # present: one HEXISTS, nothing else
    assert len(registered) == 1


def test_openssh_gets_keepalives_unless_configured(tmp_path: Path) -> None:
    """A dead link must end a stream in about a minute, not TCP's ~15."""
    argv = SshOptions().openssh_argv("hostb")
    assert argv[-1] == "hostb"
    assert argv[-5:-1] == ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    own = SshOptions(extra_ssh_args=("-o", "ServerAliveInterval=3")).openssh_argv("hostb")
    assert "ServerAliveInterval=15" not in own and "ServerAliveInterval=3" in own
    cfg = tmp_path / "cfg"
    cfg.write_text("Host hostb\n  ServerAliveInterval 2\n")
    assert not any(
        "ServerAlive" in a for a in SshOptions(config_file=str(cfg)).openssh_argv("hostb")
    )
    assert "ServerAliveInterval=15" in SshOptions(config_file=str(cfg)).openssh_argv("hostc")
    assert not any(
        "ServerAlive" in a for a in SshOptions(server_alive_interval=0).openssh_argv("h")
    )
