"""Signed task messages and the host policy, without a worker: what is accepted and why not.

(The same rules with real workers, Redis and Celery: tests/integration/test_signed_queue.py.)
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks import contract as c
from tasks.guard import Gate, Unauthorized
from workers.auth.policy import Policy, PolicyError, verb_of
from workers.auth.signing import (
    KeyFileError,
    SignatureError,
    Signer,
    TrustedKeys,
    generate,
    origin_of,
    startup_problem,
    verify,
)

KW = {"host": "na", "fs": "tank/a", "tag": "zrep"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrustedKeys]:
    d = tmp_path_factory.mktemp("keys")
    trusted = d / "trusted"
    trusted.mkdir()
    for name in ("ops", "worker-na", "stranger"):
        _, pub = generate(name, d)
        if name != "stranger":
            (trusted / pub.name).write_text(pub.read_text())
    return d, TrustedKeys.from_dir(trusted)


def _signer(d: Path, name: str, ttl: float = 60) -> Signer:
    return Signer.from_file(d / f"{name}.key", None, ttl)


def test_a_signed_message_verifies_and_any_change_to_it_does_not(
    keys: tuple[Path, TrustedKeys],
) -> None:
    d, trusted = keys
    env = _signer(d, "ops").envelope(c.CLEAR, "id-1", KW)
    v = verify(trusted, c.CLEAR, "id-1", KW, env)
    assert (v.identity, v.requester, v.hop) == ("ops", "ops", 0)
    for name, tid, kw, why in [
        (c.SYNC, "id-1", KW, "bad signature"),  # another task
        (c.CLEAR, "id-2", KW, "bad signature"),  # another id
        (c.CLEAR, "id-1", {**KW, "host": "nb"}, "bad signature"),  # another host
        (c.CLEAR, "id-1", {**KW, "fs": "tank/b"}, "bad signature"),
    ]:
        with pytest.raises(SignatureError, match=why):
            verify(trusted, name, tid, kw, env)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(trusted, c.CLEAR, "id-1", KW, {**env, "exp": env["exp"] + 3600})
    with pytest.raises(SignatureError, match="unsigned message"):
        verify(trusted, c.CLEAR, "id-1", KW, None)
    stranger = _signer(d, "stranger").envelope(c.CLEAR, "id-1", KW)
    with pytest.raises(SignatureError, match="unknown identity 'stranger'"):
        verify(trusted, c.CLEAR, "id-1", KW, stranger)
    # A stranger's key under a trusted name: the signature does not hold.
    forged = _signer(d, "stranger").envelope(c.CLEAR, "id-1", KW)
    forged = {**forged, "identity": "ops"}
    with pytest.raises(SignatureError, match="bad signature for identity 'ops'"):
        verify(trusted, c.CLEAR, "id-1", KW, forged)


def test_expired_and_future_messages_are_refused(keys: tuple[Path, TrustedKeys]) -> None:
    d, trusted = keys
    old = _signer(d, "ops", ttl=60).envelope(c.SYNC, "x", KW, now=time.time() - 120)
    with pytest.raises(SignatureError, match="expired at"):
        verify(trusted, c.SYNC, "x", KW, old)
    future = _signer(d, "ops").envelope(c.SYNC, "x", KW, now=time.time() + 3600)
    with pytest.raises(SignatureError, match="issued in the future"):
        verify(trusted, c.SYNC, "x", KW, future)


def test_a_handover_carries_the_request_it_follows_from(keys: tuple[Path, TrustedKeys]) -> None:
    d, trusted = keys
    ops, worker = _signer(d, "ops"), _signer(d, "worker-na")
    first = ops.envelope(c.TAKEOVER, "t1", {"host": "nb", "fs": "tank/b"})
    v0 = verify(trusted, c.TAKEOVER, "t1", {"host": "nb", "fs": "tank/b"}, first)
    origin = origin_of(c.TAKEOVER, "t1", {"host": "nb", "fs": "tank/b"}, v0)
    kw = {"host": "na", "fs": "tank/a", "tag": "zrep"}
    hand = worker.envelope(c.FAILOVER, "t1", kw, origin=origin, hop=1)
    v1 = verify(trusted, c.FAILOVER, "t1", kw, hand)
    assert (v1.identity, v1.requester, v1.hop) == ("worker-na", "ops", 1)
    assert origin_of(c.FAILOVER, "t1", kw, v1) == origin  # the chain keeps its first request
    for name, tid, why in [
        (c.FAILOVER, "t2", "keeps its id"),
        (c.CLEAR, "t1", "zrep.clear does not follow from zrep.takeover"),
    ]:
        env = worker.envelope(name, tid, kw, origin=origin, hop=1)
        with pytest.raises(SignatureError, match=why):
            verify(trusted, name, tid, kw, env)
    # The embedded request must itself be genuine.
    bad = {**origin, "kwargs": {"host": "nb", "fs": "tank/other"}}
    env = worker.envelope(c.FAILOVER, "t1", kw, origin=bad, hop=1)
    with pytest.raises(SignatureError, match="the request handed over: bad signature"):
        verify(trusted, c.FAILOVER, "t1", kw, env)
    with pytest.raises(SignatureError, match="without the request"):
        verify(trusted, c.FAILOVER, "t1", kw, worker.envelope(c.FAILOVER, "t1", kw, hop=1))
    # sync all's members: same host, same flags.
    sa = {"host": "na", "tag": "zrep", "force": False}
    root = ops.envelope(c.SYNC_ALL, "s1", sa)
    o = origin_of(c.SYNC_ALL, "s1", sa, verify(trusted, c.SYNC_ALL, "s1", sa, root))
    member = {**sa, "fs": "tank/a", "record_errors": True}
    verify(trusted, c.SYNC, "m1", member, worker.envelope(c.SYNC, "m1", member, origin=o, hop=1))
    for changed, why in [
        ({"host": "nb"}, "runs on the host"),
        ({"force": True}, "changed 'force'"),
    ]:
        m = {**member, **changed}
        with pytest.raises(SignatureError, match=why):
            verify(trusted, c.SYNC, "m1", m, worker.envelope(c.SYNC, "m1", m, origin=o, hop=1))
    # ... and its tag, unless the sync all asked for every tag (each member names its own).
    near = {**member, "tag": "near"}
    with pytest.raises(SignatureError, match="changed 'tag'"):
        verify(trusted, c.SYNC, "m1", near, worker.envelope(c.SYNC, "m1", near, origin=o, hop=1))
    every = {**sa, "every_tag": True}
    root = ops.envelope(c.SYNC_ALL, "s2", every)
    o = origin_of(c.SYNC_ALL, "s2", every, verify(trusted, c.SYNC_ALL, "s2", every, root))
    verify(trusted, c.SYNC, "m2", near, worker.envelope(c.SYNC, "m2", near, origin=o, hop=1))
    forced = {**near, "force": True}
    with pytest.raises(SignatureError, match="changed 'force'"):
        verify(
            trusted, c.SYNC, "m2", forced, worker.envelope(c.SYNC, "m2", forced, origin=o, hop=1)
        )


class _Redis:
    """SET NX/XX KEEPTTL and GET, as the replay guard uses them."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttl: dict[str, int] = {}

    def set(self, key: str, value: bytes, nx: bool = False, xx: bool = False, **kw: Any) -> bool:
        if (nx and key in self.data) or (xx and key not in self.data):
            return False
        self.data[key] = value
        if "ex" in kw:
            self.ttl[key] = kw["ex"]
        return True

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)


def test_the_replay_guard_lets_a_redelivery_run_and_refuses_a_replay(
    keys: tuple[Path, TrustedKeys],
) -> None:
    d, trusted = keys
    r = _Redis()
    gate = Gate("na", trusted, Policy(), True, r)
    env = _signer(d, "ops", ttl=600).envelope(c.SYNC, "id-9", KW)
    v = gate.admit(c.SYNC, "id-9", KW, env)
    assert r.data == {"zrepq:seen:na:id-9:0": b"run"}
    assert 600 <= r.ttl["zrepq:seen:na:id-9:0"] <= 600 + 300 + 1  # its lifetime, + skew
    # Its worker died before the end: acks late, delivered again, it runs again.
    assert gate.admit(c.SYNC, "id-9", KW, env) is not None
    gate.finished("id-9", v)
    with pytest.raises(Unauthorized, match=r"replayed message \(task id-9 already ran on na\)"):
        gate.admit(c.SYNC, "id-9", KW, env)
    # The same id on another host (the other half of a failover keeps it): its own key.
    kw = {**KW, "host": "nb"}
    other = _signer(d, "ops", ttl=600).envelope(c.SYNC, "id-9", kw)
    assert Gate("nb", trusted, Policy(), True, r).admit(c.SYNC, "id-9", kw, other) is not None


def test_unsigned_messages_run_only_where_signing_is_not_required(
    keys: tuple[Path, TrustedKeys],
) -> None:
    _d, trusted = keys
    with pytest.raises(Unauthorized) as e:
        Gate("na", trusted, Policy(), True, _Redis()).admit(c.CLEAR, "i", KW, None)
    assert e.value.to_record() == {
        "kind": "unauthorized",
        "message": "zrep.clear refused: unsigned message (no zrepq_auth header)",
        "dataset": "tank/a",
        "host": "na",
        "retryable": False,
    }
    assert Gate("na", trusted, Policy(), False, _Redis()).admit(c.CLEAR, "i", KW, None) is None


def test_a_worker_without_trusted_keys_does_not_start(tmp_path: Path) -> None:
    assert "holds no public key" in (startup_problem(True, None) or "")
    assert "holds no public key" in (startup_problem(True, tmp_path) or "")
    assert startup_problem(False, None) is None
    (tmp_path / "x.pub").write_text("ssh-ed25519 AAAA x\n")
    assert "expected one line `zrepq-ed25519 BASE64 IDENTITY`" in (
        startup_problem(True, tmp_path) or ""
    )
    with pytest.raises(KeyFileError, match="not a valid identity"):
        generate("../etc", tmp_path)


# ---- the policy ----------------------------------------------------------------------------


def _args(name: str, **kw: Any) -> Any:
    return c.validate(name, {"host": "na", **kw})


@pytest.mark.parametrize(
    ("name", "kw", "verb", "dataset"),
    [
        (c.STATUS, {}, "status", None),
        (c.STATUS, {"fs": ["tank/a"]}, "status", "tank/a"),
        (c.SYNC, {"fs": "tank/a"}, "sync", "tank/a"),
        (c.SYNC, {"fs": "tank/a", "force": True}, "sync -f", "tank/a"),
        (c.SYNC, {"fs": "tank/a@zrep_000001"}, "rollback", "tank/a"),
        (c.SYNC, {"fs": "tank/a", "snapshot": False}, "sync", "tank/a"),
        (c.ROLLBACK, {"snapshot": "tank/a@zrep_000001"}, "rollback", "tank/a"),
        (c.TAKEOVER, {"fs": "tank/a", "local_only": True, "force": True}, "takeover -F", "tank/a"),
        (c.FAILOVER, {"fs": "tank/a@zrep_000002", "local_only": True}, "rollback", "tank/a"),
        (c.SENTSYNC, {"snapshot": "tank/a@zrep_000001"}, "sentsync", "tank/a"),
        (
            c.INIT,
            {"fs": "t/a", "dest_host": "nb", "dest_fs": "t/b", "force": True},
            "init -f",
            "t/a",
        ),
        (c.SYNC_ALL, {}, "sync_all", None),
        (c.CLEAR, {"fs": "tank/a"}, "clear", "tank/a"),
    ],
)
def test_each_message_is_one_verb_on_one_dataset(
    name: str, kw: dict[str, Any], verb: str, dataset: str | None
) -> None:
    assert verb_of(name, _args(name, **kw)) == (verb, dataset)


def test_the_default_policy_allows_routine_work_and_no_destruction() -> None:
    p = Policy()
    assert p.refusal("anyone", "sync", "tank/a", "na") is None
    assert p.refusal("anyone", "status", None, "na") is None
    assert p.refusal("anyone", "clear", "tank/a", "na") == (
        "identity 'anyone' may not run 'clear' on na:tank/a: no rule allows it (the default policy)"
    )


def test_a_rule_names_identities_verbs_and_datasets(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(
        '[defaults]\nallow = ["read"]\n\n[[rule]]\nname = "admins"\nidentities = ["ops-*"]\n'
        'verbs = ["destructive", "sync"]\ndatasets = ["tank/prod", "tank/prod/*"]\n'
    )
    p = Policy.load(f)
    assert p.refusal("ops-1", "clear", "tank/prod/db", "na") is None
    assert p.refusal("ops-1", "sync", "tank/prod", "na") is None
    assert p.refusal("ops-1", "clear", "tank/scratch", "na") == (
        "identity 'ops-1' may not run 'clear' on na:tank/scratch: rule 'admins' allows it "
        f"only on tank/prod, tank/prod/* ({f})"
    )
    assert "no rule allows it" in (p.refusal("bob", "sync", "tank/prod", "na") or "")
    assert p.refusal("bob", "list", None, "na") is None
    assert "every dataset of na" in (p.refusal("ops-1", "sync_all", None, "na") or "")
    f.write_text('[[rule]]\nname = "x"\nidentities = ["a"]\nverbs = ["destroy"]\n')
    with pytest.raises(PolicyError, match="unknown verb 'destroy'"):
        Policy.load(f)
    f.write_text('[[rule]]\nname = "x"\nverbs = ["clear"]\n')
    with pytest.raises(PolicyError, match=r"rule\.0\.identities: Field required"):
        Policy.load(f)


def test_the_gate_refuses_by_the_requesters_identity(keys: tuple[Path, TrustedKeys]) -> None:
    _d, trusted = keys
    from tasks import guard

    gate = Gate("na", trusted, Policy(), True, _Redis())
    v = SimpleNamespace(identity="worker-nb", requester="bob")
    token = guard.VERIFIED.set(v)  # type: ignore[arg-type]
    try:
        with pytest.raises(Unauthorized) as e:
            gate.allow(c.CLEAR, _args(c.CLEAR, fs="tank/a"))
    finally:
        guard.VERIFIED.reset(token)
    assert e.value.message == (
        "identity 'bob' may not run 'clear' on na:tank/a: no rule allows it "
        "(the default policy) (handed over by 'worker-nb')"
    )


def test_the_sample_policy_loads() -> None:
    from tests.harness.netutil import REPO

    p = Policy.load(REPO / "deploy" / "policy.toml")
    assert p.refusal("alice", "clear", "pool/prod/db", "na") is None
    assert "no rule allows it" in (p.refusal("ops", "clear", "pool/prod/db", "na") or "")
