"""`Producer.batch()`: many tasks over one connection, pipelined, each with its `task-sent`
event, so Flower still shows every queued task; and the CLI sends several targets that way."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.api import Producer
from tasks import contract as c
from tasks.app import make_app
from tests.harness.netutil import REPO
from tests.harness.redis_server import RedisServer
from tests.harness.services import start_flower
from tests.harness.signing import signed
from workers.keys import host_key

pytestmark = pytest.mark.integration

HOSTS = ("bqa", "bqb")  # registered, but no worker consumes their queues here


def _register(client: redis.Redis) -> None:
    for h in HOSTS:
        client.set(host_key(h), json.dumps({"queue": c.queue_for(h), "registered": 1}))


def _queued(client: redis.Redis, host: str) -> list[dict[str, Any]]:
    """The messages on host's queue, oldest first, as (headers, kwargs)."""
    out = []
    for raw in reversed(client.lrange(c.queue_for(host), 0, -1)):
        msg = json.loads(raw)
        assert msg["content-type"] == "application/json"
        _args, kwargs, _embed = json.loads(base64.b64decode(msg["body"]))
        out.append({"headers": msg["headers"], "kwargs": kwargs})
    return out


@pytest.fixture
def producer(redis_client: redis.Redis, redis_url: str) -> Producer:
    _register(redis_client)
    return Producer(app=make_app(signed({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": redis_url})))


def test_a_batch_queues_every_task_as_json_in_order(
    producer: Producer, redis_client: redis.Redis
) -> None:
    with producer.batch() as p:
        assert p is producer
        results = [p.sync(f"pool/fs{i:04d}", host=HOSTS[i % 2]) for i in range(1200)]
        results.append(p.pause("pool/x", host="bqa", reason='it\'s "maintenance"'))
    a, b = _queued(redis_client, "bqa"), _queued(redis_client, "bqb")
    assert len(a) == 601 and len(b) == 600  # more than one pipeline write
    assert [m["kwargs"]["fs"] for m in a[:3]] == ["pool/fs0000", "pool/fs0002", "pool/fs0004"]
    assert [m["headers"]["id"] for m in a[:-1]] == [r.id for r in results[0:1200:2]]
    first = a[0]
    assert first["headers"]["task"] == c.SYNC
    assert first["kwargs"] == c.validate(c.SYNC, first["kwargs"]).model_dump()
    assert first["headers"]["kwargsrepr"] == repr(first["kwargs"])
    assert a[-1]["kwargs"]["reason"] == 'it\'s "maintenance"'


def test_the_same_messages_as_one_at_a_time(producer: Producer, redis_client: redis.Redis) -> None:
    producer.sync("pool/one", host="bqa", changed_only=True)
    with producer.batch():
        producer.sync("pool/one", host="bqa", changed_only=True)
    single, batched = _queued(redis_client, "bqa")
    assert single["kwargs"] == batched["kwargs"]
    volatile = {"id", "root_id", "timelimit", "zrepq_auth"}  # the signature covers id and time
    assert single["headers"]["zrepq_auth"]["identity"] == "tester"
    assert batched["headers"]["zrepq_auth"]["identity"] == "tester"
    assert {k: v for k, v in single["headers"].items() if k not in volatile} == {
        k: v for k, v in batched["headers"].items() if k not in volatile
    }


def test_what_was_accepted_is_sent_when_the_block_raises(
    producer: Producer, redis_client: redis.Redis
) -> None:
    with pytest.raises(c.ValidationError, match="unknown host 'nosuch'"), producer.batch():
        producer.sync("pool/a", host="bqa")
        producer.sync("pool/b", host="bqa")
        producer.sync("pool/c", host="nosuch")
    assert [m["kwargs"]["fs"] for m in _queued(redis_client, "bqa")] == ["pool/a", "pool/b"]
    with pytest.raises(RuntimeError, match="mine"), producer.batch():
        producer.sync("pool/d", host="bqb")
        raise RuntimeError("mine")  # not turned into a broker error
    assert [m["kwargs"]["fs"] for m in _queued(redis_client, "bqb")] == ["pool/d"]


def test_nested_batches_are_one_and_sending_works_after(
    producer: Producer, redis_client: redis.Redis
) -> None:
    with producer.batch():
        producer.sync("pool/a", host="bqa")
        with producer.batch():
            producer.sync("pool/b", host="bqa")
        assert redis_client.llen(c.queue_for("bqa")) == 0  # the outer block sends
    assert redis_client.llen(c.queue_for("bqa")) == 2
    producer.sync("pool/c", host="bqa")  # outside a batch: sent at once
    assert redis_client.llen(c.queue_for("bqa")) == 3
    assert producer.sync_all(list(HOSTS))  # several hosts: one batch
    assert redis_client.llen(c.queue_for("bqb")) == 1


def test_the_cli_sends_several_targets_in_one_batch(
    redis_client: redis.Redis, redis_url: str
) -> None:
    _register(redis_client)
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", "-H", "bqa", "sync", "pool/a", "pool/b", "bqb:p/c"],
        env={**os.environ, "ZREPQ_BROKER_URL": redis_url, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["pool/a", "pool/b", "bqb"]
    assert [m["kwargs"]["fs"] for m in _queued(redis_client, "bqa")] == ["pool/a", "pool/b"]
    assert [m["kwargs"]["fs"] for m in _queued(redis_client, "bqb")] == ["p/c"]


def _flower_task(base: str, task_id: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{base}/api/task/info/{task_id}", timeout=5) as resp:
            info: dict[str, Any] = json.loads(resp.read())
            return info
    except (urllib.error.HTTPError, OSError):
        return None


def test_flower_shows_the_tasks_of_a_batch_as_queued(
    producer: Producer, redis_server: RedisServer, tmp_path: Path
) -> None:
    flower = start_flower(redis_server.url, tmp_path)
    try:
        base = f"http://127.0.0.1:{flower.port}"
        # Events are not stored: wait until Flower listens (a probe task shows up).
        deadline = time.monotonic() + 60
        while True:
            probe = producer.sync("pool/probe", host="bqa")
            time.sleep(0.5)
            if _flower_task(base, probe.id) is not None:
                break
            assert time.monotonic() < deadline, flower.output()
        with producer.batch():
            results = [producer.sync(f"pool/fs{i}", host=HOSTS[i % 2]) for i in range(20)]
        deadline = time.monotonic() + 20
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < len(results) and time.monotonic() < deadline:
            for r in results:
                if r.id not in seen and (info := _flower_task(base, r.id)) is not None:
                    seen[r.id] = info
            time.sleep(0.2)
        assert len(seen) == len(results)
        for i, r in enumerate(results):
            info = seen[r.id]
            assert info["name"] == c.SYNC and info["state"] == "PENDING", info
            assert f"pool/fs{i}" in info["kwargs"]
    finally:
        flower.stop()


def test_a_sync_alls_chord_goes_out_in_pipelines_and_says_what_it_carries(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """What a worker's `sync all` publishes (`tasks.handlers.FanOut`): inside
    `tasks.app.pipelined` the chord's members are written when the block ends (kombu writes
    every 1,000 operations: a message and its event are two), not one round trip each, and
    every member carries the chord and the repr of its arguments that Flower shows."""
    from celery import chord

    from tasks.app import pipelined
    from tasks.handlers import _member

    app = make_app(signed({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": redis_url}))
    queue = c.queue_for("bqa")
    base = {"host": "bqa", "changed_only": True, "record_errors": True}
    header = [_member(base, "zrep", f"pool/fs{i:03d}", queue, on=app) for i in range(400)]
    body = app.signature(c.SYNC_ALL_SUMMARY, kwargs={"host": "bqa", "started": 1.0}, queue=queue)
    with pipelined(app):
        chord(header, body).apply_async()
        assert redis_client.llen(queue) == 0  # 800 operations: none written yet
    msgs = _queued(redis_client, "bqa")
    assert [m["kwargs"]["fs"] for m in msgs] == [f"pool/fs{i:03d}" for i in range(400)]
    groups = {m["headers"]["group"] for m in msgs}
    assert len(groups) == 1 and None not in groups
    first = msgs[0]
    assert first["headers"]["kwargsrepr"] == repr(first["kwargs"])
    assert first["headers"]["argsrepr"] == "()"
    assert first["headers"]["ignore_result"] is True
    assert first["headers"]["zrepq_auth"]["identity"] == "tester"
    # The chord's body travels in each member's embed; kombu wrote the chord's size too.
    raw = json.loads(redis_client.lrange(queue, -1, -1)[0])
    embed = json.loads(base64.b64decode(raw["body"]))[2]
    assert embed["chord"]["task"] == c.SYNC_ALL_SUMMARY
    # Outside a block, publishing is immediate again.
    app.signature(c.SYNC, kwargs={**base, "fs": "pool/after", "tag": "zrep"}, queue=queue).delay()
    assert redis_client.llen(queue) == 401
    # No worker runs these members: the chord's size would stay for `result_expires`, in the
    # Redis every later test of the session shares (test_queue.py counts chord keys).
    (gid,) = groups
    assert redis_client.delete(f"celery-taskset-meta-{gid}.s") == 1
