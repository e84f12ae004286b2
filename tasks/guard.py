"""The worker's gate: a task runs only if its message is signed, fresh, new, and allowed.

Every zrep task (`tasks.handlers`) is a `Guarded` task. Before its body runs (before the
JSON arguments are validated, before any zfs command), its message's `zrepq_auth` header is
checked (`workers.auth.signing.verify`): unsigned, badly signed, by an unknown identity,
expired, or a hand-over that does not follow from the request it embeds: refused. Then the
replay guard: the task id (per host and hop) is remembered in Redis until the message
expires, so a message that already ran here is refused when it comes again. After the
arguments are validated, this host's policy (`workers.auth.policy`) decides whether the
requester (for a hand-over: the person who asked first) may run that verb on that dataset.

A refusal is the error kind `unauthorized`, never retryable: the task fails with that record
(Flower shows it red with the reason), or, for a member of `sync all`, returns it.

Redelivery: tasks are acked late, so a message whose worker process died is delivered again
with the same id and must run again. The replay key therefore has two states: `run` (taken
when the task starts) and `done` (set when its body returns or raises). A message whose key
says `done` is a replay and refused; one whose key says `run` is let through (the earlier
run died, or still runs: then its lease makes this one a `duplicate`). See
docs/reliability.md, "Signed requests", for what that leaves open.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Task

from tasks.app import app, settings_of
from tasks.errors import TaskFailed
from workers.auth import signing
from workers.auth.policy import Policy, PolicyError, verb_of
from workers.auth.signing import SignatureError, TrustedKeys, Verified
from workers.engine.errors import ConfigError, HostUnreachable, ZrepqError
from workers.keys import seen_key

log = logging.getLogger(__name__)

# The verified envelope of the task this thread runs (None: unsigned, allowed by opt-out).
VERIFIED: contextvars.ContextVar[Verified | None] = contextvars.ContextVar(
    "zrepq_verified", default=None
)

RUNNING, DONE = b"run", b"done"


class Unauthorized(ZrepqError):
    """The message's signature or this host's policy refuses the task; nothing ran."""

    kind = "unauthorized"
    retryable = False


@dataclass(frozen=True)
class Gate:
    """One worker's keys, policy and replay memory."""

    host: str
    trusted: TrustedKeys
    policy: Policy
    required: bool
    client: Any  # redis-py, for the replay keys

    def admit(self, name: str, task_id: str | None, kwargs: Any, envelope: Any) -> Verified | None:
        """The verified envelope, or None for an unsigned message when signing is not
        required; raise `Unauthorized` otherwise."""
        if envelope is None and not self.required:
            log.warning(
                "%s %s: unsigned message accepted ([signing] required = false)", name, task_id
            )
            return None
        try:
            v = signing.verify(self.trusted, name, task_id, kwargs, envelope)
        except SignatureError as e:
            raise self._refused(f"{name} refused: {e}", kwargs) from None
        assert task_id is not None  # verify refuses a message without one
        self._first_time(name, task_id, v, kwargs)
        return v

    def _first_time(self, name: str, task_id: str, v: Verified, kwargs: Any) -> None:
        """Refuse a message that already ran on this host; remember this one until it
        expires (+ the clock skew allowed)."""
        key = seen_key(self.host, task_id, v.hop)
        ttl = max(1, math.ceil(v.exp - time.time() + signing.SKEW))
        try:
            if self.client.set(key, RUNNING, nx=True, ex=ttl):
                return
            state = self.client.get(key)
        except Exception as e:  # redis' errors: the broker is unreachable
            raise HostUnreachable(f"cannot check {name} {task_id} for replay: {e}") from None
        if state == DONE:
            raise self._refused(
                f"{name} refused: replayed message (task {task_id} already ran on {self.host})",
                kwargs,
            )
        log.warning(
            "%s %s: delivered again while marked running (earlier run died?)", name, task_id
        )

    def finished(self, task_id: str | None, v: Verified | None) -> None:
        if v is None or not task_id:
            return
        try:
            self.client.set(seen_key(self.host, task_id, v.hop), DONE, xx=True, keepttl=True)
        except Exception as e:
            log.warning("could not mark task %s done (a replay would run again): %s", task_id, e)

    def allow(self, name: str, args: Any) -> None:
        """This host's policy on the validated `args`; `Unauthorized` naming the rule."""
        v = VERIFIED.get()
        if v is None and not self.required:
            return
        identity = v.requester if v is not None else "?"
        verb, dataset = verb_of(name, args)
        why = self.policy.refusal(identity, verb, dataset, self.host)
        if why is not None and v is not None and v.identity != v.requester:
            why += f" (handed over by {v.identity!r})"
        if why is not None:
            raise Unauthorized(why, host=self.host, dataset=dataset)

    def _refused(self, message: str, kwargs: Any) -> Unauthorized:
        fs = kwargs.get("fs", kwargs.get("snapshot")) if isinstance(kwargs, Mapping) else None
        return Unauthorized(message, host=self.host, dataset=fs if isinstance(fs, str) else None)


def build_gate(cfg: Any, host: str, client: Any) -> Gate:
    """The gate of a worker from its settings; `ConfigError` when it must not start."""
    sg = cfg.model.signing
    try:
        trusted = TrustedKeys.from_dir(sg.trusted)
        policy = Policy.load(sg.policy)
    except (signing.KeyFileError, PolicyError) as e:
        raise ConfigError(str(e)) from None
    problem = signing.startup_problem(sg.required, sg.trusted)
    if problem is not None:
        raise ConfigError(problem)
    if not sg.required:
        log.warning(
            "[signing] required = false: this worker runs UNSIGNED task messages from anyone "
            "who can write to the broker"
        )
    return Gate(host, trusted, policy, sg.required, client)


@lru_cache(maxsize=1)
def gate(pid: int) -> Gate:
    """This worker process's gate (built once per process)."""
    from tasks.handlers import this_host

    cfg = settings_of(app)
    return build_gate(cfg, this_host(), cfg.redis())


class Guarded(Task[Any, Any]):
    """A zrep task: the message is admitted (signature, freshness, replay) before the body
    runs, and what the body sends meanwhile is signed as a hand-over of this request."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        try:
            g = gate(os.getpid())
            v = g.admit(self.name, task_id, kwargs, getattr(self.request, signing.HEADER, None))
        except ZrepqError as e:
            rec = e.to_record()
            log.error("%s %s: %s", self.name, task_id, e.message)
            if kwargs.get("record_errors") is True:  # a member of `sync all`: its row
                return {"ok": False, "error": rec, "dataset": rec.get("dataset")}
            raise TaskFailed(rec) from None
        token = VERIFIED.set(v)
        acting = None
        if v is not None and task_id:
            origin = signing.origin_of(self.name, task_id, kwargs, v)
            acting = signing.ACTING_FOR.set((origin, v.hop))
        try:
            return super().__call__(*args, **kwargs)
        finally:
            if acting is not None:
                signing.ACTING_FOR.reset(acting)
            VERIFIED.reset(token)
            g.finished(task_id, v)


def allow(name: str, args: Any) -> None:
    """The policy check of the running task (`tasks.handlers._run`, after validation)."""
    gate(os.getpid()).allow(name, args)


__all__ = ["Guarded", "Unauthorized", "allow", "build_gate", "gate"]
