"""Who may ask for what, with real processes: redis-server, two `zrepq-worker`s (qa, qb),
stand-in zfs behind real sshd. Every refused message must leave the zfs call logs of both
hosts untouched.

The harness's keys (tests/harness/signing.py): `tester` (named for every verb by the
workers' policy), `plain` (trusted, default policy: what a stolen worker or producer key
of an unnamed identity is worth), `outsider` (a key no worker trusts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from producer.api import Producer
from producer.watch import wait
from tasks import contract as c
from tasks.app import make_app
from tests.harness.fleet import Fleet, Site
from tests.harness.netutil import wait_until
from tests.harness.redis_server import RedisServer
from tests.harness.services import Service, start_site_workers, stop_all
from tests.harness.signing import key_dir, signed
from tests.harness.sshd import SshdCluster
from workers.auth.signing import HEADER, Signer

HOSTS = ("sa", "sb")


@pytest.fixture(scope="module")
def workers(
    sshd_cluster: SshdCluster, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Service]]:
    started = start_site_workers(
        sshd_cluster, HOSTS, redis_server.url, tmp_path_factory.mktemp("signed")
    )
    try:
        yield started
    finally:
        stop_all(started)


@pytest.fixture
def pair(
    fleet: Callable[..., Fleet], workers: dict[str, Service], redis_server: RedisServer
) -> tuple[Site, Site, Producer]:
    f = fleet(*HOSTS)
    p = Producer(app=make_app(signed({"ZREPQ_BROKER_URL": redis_server.url})))
    a, b = f["sa"], f["sb"]
    a.zfs.zfs("create", a.fs("prod"))
    a.zfs.write(a.fs("prod"), "data.txt", b"keep me\n")
    rec = done(p.init(a.fs("prod"), "sb", b.fs("prod"), host="sa"))
    assert rec["ok"], rec
    return a, b, p


def done(r: Any, timeout: float = 120) -> dict[str, Any]:
    return wait({"t": r}, timeout=timeout, show=False)["t"]


def app_as(url: str, key: str | None) -> Celery:
    """A producer app signing with the harness's key `key` (None: none; the broker alone)."""
    if key is None:
        return make_app({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": url})
    return make_app(signed({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": url}, as_=key))


def calls(*sites: Site) -> list[int]:
    return [len(s.zfs.calls()) for s in sites]


def refused(app: Celery, name: str, kwargs: dict[str, Any], **opts: Any) -> dict[str, Any]:
    """Send `name` to its host's queue; the task must fail `unauthorized`: its record."""
    r = app.send_task(name, kwargs=kwargs, queue=c.queue_for(kwargs["host"]), **opts)
    rec = done(r, timeout=60)
    assert not rec["ok"], rec
    assert rec["error"]["kind"] == "unauthorized" and rec["error"]["retryable"] is False, rec
    return rec["error"]


def test_a_rogue_producer_with_the_broker_password_but_no_key_is_refused(
    pair: tuple[Site, Site, Producer], redis_server: RedisServer
) -> None:
    a, b, _ = pair
    before = calls(a, b)
    for key, says in [
        (None, "zrep.clear refused: unsigned message (no zrepq_auth header)"),
        ("outsider", "unknown identity 'outsider'"),
    ]:
        err = refused(app_as(redis_server.url, key), c.CLEAR, {"host": "sa", "fs": a.fs("prod")})
        assert says in err["message"], err
        assert err["host"] == "sa" and err["dataset"] == a.fs("prod")
    assert calls(a, b) == before  # no zfs ran on either host
    assert a.zfs.get("zrep:master", a.fs("prod")) == "yes"  # still configured


def test_a_stolen_worker_key_cannot_clear_another_hosts_dataset(
    pair: tuple[Site, Site, Producer], redis_server: RedisServer
) -> None:
    """sa's worker key (identity `plain`: trusted, no rule names it) enqueueing `zrep.clear`
    for sb: the policy refuses it, naming identity, verb and rule; routine work still runs."""
    a, b, _ = pair
    stolen = app_as(redis_server.url, "plain")
    before = calls(a, b)
    err = refused(stolen, c.CLEAR, {"host": "sb", "fs": b.fs("prod")})
    assert err["message"].startswith(
        f"identity 'plain' may not run 'clear' on sb:{b.fs('prod')}: no rule allows it"
    ), err
    err = refused(stolen, c.ROLLBACK, {"host": "sa", "snapshot": f"{a.fs('prod')}@zrep_000000"})
    assert "may not run 'rollback'" in err["message"], err
    err = refused(stolen, c.TAKEOVER, {"host": "sb", "fs": b.fs("prod"), "local_only": True,
                                       "force": True})  # fmt: skip
    assert "may not run 'takeover -F'" in err["message"], err
    assert calls(a, b) == before
    # A forged hand-over (a worker passing on "the other half") of a clear: refused too.
    app = stolen
    kw = {"host": "sb", "fs": b.fs("prod")}
    msg = app.amqp.create_task_message("forged-1", c.CLEAR, (), kw)
    genuine = app.amqp.create_task_message("forged-1", c.SYNC, (), kw)  # a sync it may ask
    origin = {"task": c.SYNC, "id": "forged-1", "kwargs": kw, "auth": genuine.headers[HEADER]}
    signer = Signer.from_file(key_dir() / "plain.key", None, 600)
    msg.headers[HEADER] = signer.envelope(c.CLEAR, "forged-1", kw, origin=origin, hop=1)
    with app.producer_or_acquire() as prod:
        app.amqp.send_task_message(prod, c.CLEAR, msg, queue=c.queue_for("sb"))
    rec = done(app.AsyncResult("forged-1"), timeout=60)
    assert rec["error"]["kind"] == "unauthorized", rec
    assert "zrep.clear does not follow from zrep.sync" in rec["error"]["message"], rec
    assert calls(a, b) == before
    # What the default policy gives every trusted identity still works.
    a.zfs.write(a.fs("prod"), "data.txt", b"routine\n")
    r = stolen.send_task(c.SYNC, kwargs={"host": "sa", "fs": a.fs("prod")}, queue=c.queue_for("sa"))
    assert done(r)["ok"]


def test_a_replayed_message_is_refused(
    pair: tuple[Site, Site, Producer], workers: dict[str, Service]
) -> None:
    """The very same message (bytes, headers, id) published twice: the second is a replay.

    Celery keeps a task's SUCCESS result (it never overwrites one), so the refusal shows in
    the task's failure event (Flower) and the worker's log, and the first result stays."""
    a, b, p = pair
    app = p.app
    kw = {"host": "sa", "fs": a.fs("prod")}
    msg = app.amqp.create_task_message("replay-1", c.SYNC, (), kw)
    with app.producer_or_acquire() as prod:
        app.amqp.send_task_message(prod, c.SYNC, msg, queue=c.queue_for("sa"))
    assert done(app.AsyncResult("replay-1"))["ok"]
    before = calls(a, b)
    with app.producer_or_acquire() as prod:
        app.amqp.send_task_message(prod, c.SYNC, msg, queue=c.queue_for("sa"))
    says = "zrep.sync refused: replayed message (task replay-1 already ran on sa)"
    assert wait_until(lambda: says in workers["sa"].output(), 60, 0.2)
    assert "TaskFailed({'kind': 'unauthorized'" in workers["sa"].output()
    assert done(app.AsyncResult("replay-1"))["ok"]  # the genuine result stays
    assert calls(a, b) == before
    # Tampering with the arguments of a signed message: the signature no longer holds.
    tampered = app.amqp.create_task_message("tamper-1", c.SYNC, (), kw)
    tampered.body[1]["fs"] = a.fs("other")
    with app.producer_or_acquire() as prod:
        app.amqp.send_task_message(prod, c.SYNC, tampered, queue=c.queue_for("sa"))
    rec = done(app.AsyncResult("tamper-1"), timeout=60)
    assert "bad signature for identity 'tester'" in rec["error"]["message"], rec
    assert calls(a, b) == before


def test_an_expired_message_is_refused(
    pair: tuple[Site, Site, Producer], redis_server: RedisServer
) -> None:
    a, b, p = pair
    app = p.app
    kw = {"host": "sa", "fs": a.fs("prod")}
    msg = app.amqp.create_task_message("expired-1", c.SYNC, (), kw)
    old = Signer.from_file(key_dir() / "tester.key", None, 60)
    msg.headers[HEADER] = old.envelope(c.SYNC, "expired-1", kw, now=time.time() - 120)
    before = calls(a, b)
    with app.producer_or_acquire() as prod:
        app.amqp.send_task_message(prod, c.SYNC, msg, queue=c.queue_for("sa"))
    rec = done(app.AsyncResult("expired-1"), timeout=60)
    assert rec["error"]["kind"] == "unauthorized", rec
    assert "refused: expired at" in rec["error"]["message"], rec
    assert calls(a, b) == before


def test_failover_and_back_hand_over_with_the_requesters_identity(
    pair: tuple[Site, Site, Producer], redis_server: RedisServer
) -> None:
    """The other half runs on the other host's worker, signed by that worker, judged by the
    policy for the requester: `tester` may; `plain` may fail over (routine), not roll back."""
    a, b, p = pair
    rec = done(p.failover(a.fs("prod"), host="sa"))
    assert rec["ok"], rec
    assert [s["role"] for s in rec["result"]["sides"]] == ["standby", "master"]
    plain = Producer(app=app_as(redis_server.url, "plain"))
    rec = done(plain.takeover(a.fs("prod"), host="sa"))
    assert rec["ok"], rec
    assert a.zfs.get("zrep:master", a.fs("prod")) == "yes"
    before = calls(a, b)
    err = refused(plain.app, c.FAILOVER, {"host": "sa", "fs": f"{a.fs('prod')}@zrep_000000",
                                          "local_only": True})  # fmt: skip
    assert "identity 'plain' may not run 'rollback'" in err["message"], err
    assert calls(a, b) == before


def test_a_producer_key_that_does_not_exist_stops_the_producer(tmp_path: Path) -> None:
    from workers.settings import ConfigError

    with pytest.raises(ConfigError, match=r"ZREPQ_SIGNING_KEY: .* does not exist"):
        make_app({"ZREPQ_CONFIG": "none", "ZREPQ_SIGNING_KEY": str(tmp_path / "none.key")})
