"""Signed task messages: who asked for a task, proven with an Ed25519 signature.

Every message a zrepq app publishes carries the header `zrepq_auth`, an envelope signed with
its producer's private key:

    {"v": 1, "identity": "ops", "iat": 1733356800.0, "exp": 1733443200.0, "hop": 0,
     "origin": null, "sig": "<base64 Ed25519 signature>"}

The signature covers the canonical JSON (sorted keys, no spaces, UTF-8) of the envelope
without `sig` plus the task's name, id and keyword arguments as sent (which hold `host`, the
host whose worker must run it): a signed message cannot be moved to another task, id or
host, nor its arguments changed, nor its lifetime stretched.

Workers hold only public keys (`TrustedKeys`: a directory of `NAME.pub` files), so a storage
host can verify producers but never forge one. A worker that hands a task on (the other half
of a failover/takeover, the members of `sync all`) signs it with its own identity and embeds
the request it acts on (`origin`, the first signed request of the chain, itself verified
again by the receiver), so the receiver's policy judges the person who asked, not the worker.

Why Ed25519 and not Celery's own message signing (`task_serializer="auth"`): Celery's signs
with X.509 certificates and a pickle-free but custom serializer the whole app must switch
to, and every consumer (Flower, other services) then needs the certificate chain; and why
not an HMAC: its key would have to be on every worker, and a worker that can verify could
also forge. Ed25519 signs in ~0.05 ms and keys are 32 bytes (one line per identity).

This module is pure (no Celery, no Redis): keys, canonical form, sign and verify. The
worker applies it in `tasks/guard.py`; `tasks/app.py` signs.
"""

from __future__ import annotations

import base64
import contextvars
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER = "zrepq_auth"  # the message header that carries the envelope
VERSION = 1
PUBLIC_PREFIX = "zrepq-ed25519"  # first word of a public key line
MAX_HOPS = 3  # a failover/takeover is at most three halves
SKEW = 300.0  # seconds a clock may be ahead of the verifier's

# Set by the worker while it runs a verified task: (the chain's first request, this hop).
# What the worker's app sends meanwhile is signed as a hand-over of that request.
ACTING_FOR: contextvars.ContextVar[tuple[dict[str, Any], int] | None] = contextvars.ContextVar(
    "zrepq_acting_for", default=None
)

_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SignatureError(Exception):
    """A message's signature cannot be accepted; the text says why."""


class KeyFileError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key."""


def check_identity(name: str) -> str:
    if not _IDENTITY.fullmatch(name):
        raise KeyFileError(
            f"{name!r} is not a valid identity: letters, digits, '.', '_', '-'; "
            "at most 64 characters, starting with a letter or digit"
        )
    return name


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value that signer and verifier both compute."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def signed_part(name: str, task_id: str, kwargs: Any, envelope: Mapping[str, Any]) -> bytes:
    """What the signature covers: the envelope but its `sig`, the task, its id and kwargs."""
    body = {k: v for k, v in envelope.items() if k != "sig"}
    return canonical({"task": name, "id": task_id, "kwargs": kwargs, "auth": body})


# ---- keys ----------------------------------------------------------------------------------


def public_line(identity: str, key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{PUBLIC_PREFIX} {base64.b64encode(raw).decode()} {identity}\n"


def parse_public(line: str, where: str) -> tuple[str, Ed25519PublicKey]:
    """(identity, key) of a `zrepq-ed25519 BASE64 IDENTITY` line."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != PUBLIC_PREFIX:
        raise KeyFileError(f"{where}: expected one line `{PUBLIC_PREFIX} BASE64 IDENTITY`")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(parts[1], validate=True))
    except ValueError as e:
        raise KeyFileError(f"{where}: not an Ed25519 public key ({e})") from None
    return check_identity(parts[2]), key


def generate(identity: str, directory: Path) -> tuple[Path, Path]:
    """Write `NAME.key` (private, 0600) and `NAME.pub` (public) in `directory`; refuses to
    overwrite. Returns both paths."""
    check_identity(identity)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{identity}.key", directory / f"{identity}.pub"
    for p in (private, public):
        if p.exists():
            raise KeyFileError(f"{p} exists; not overwriting a key (remove it first)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_text(public_line(identity, key.public_key()))
    return private, public


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise KeyFileError(f"cannot read signing key {path}: {e}") from None
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key (make one with `zrepq keygen NAME`)")
    return key


def identity_of(key_path: Path, identity: str | None) -> str:
    """The identity a key signs as: given, else the key file's name without `.key`."""
    return check_identity(identity or key_path.name.removesuffix(".key"))


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a worker accepts: identity -> key (one `NAME.pub` file each)."""

    keys: Mapping[str, Ed25519PublicKey]
    source: str

    @classmethod
    def from_dir(cls, directory: Path | None) -> TrustedKeys:
        keys: dict[str, Ed25519PublicKey] = {}
        if directory is None:
            return cls(keys, "no trusted keys configured")
        try:
            files = sorted(directory.glob("*.pub"))
        except OSError as e:
            raise KeyFileError(f"cannot read trusted keys in {directory}: {e}") from None
        for f in files:
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                identity, key = parse_public(line, f"{f}:{n}")
                if identity in keys:
                    raise KeyFileError(f"{f}:{n}: identity {identity!r} is trusted twice")
                keys[identity] = key
        return cls(keys, str(directory))


# ---- sign ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """Signs task messages as `identity`, each valid for `ttl` seconds."""

    identity: str
    key: Ed25519PrivateKey
    ttl: float

    @classmethod
    def from_file(cls, path: Path, identity: str | None, ttl: float) -> Signer:
        return cls(identity_of(path, identity), load_private(path), ttl)

    def envelope(
        self,
        name: str,
        task_id: str,
        kwargs: Any,
        *,
        origin: Mapping[str, Any] | None = None,
        hop: int = 0,
        now: float | None = None,
    ) -> dict[str, Any]:
        iat = time.time() if now is None else now
        env: dict[str, Any] = {
            "v": VERSION,
            "identity": self.identity,
            "iat": round(iat, 3),
            "exp": round(iat + self.ttl, 3),
            "hop": hop,
            "origin": dict(origin) if origin is not None else None,
        }
        sig = self.key.sign(signed_part(name, task_id, kwargs, env))
        env["sig"] = base64.b64encode(sig).decode()
        return env


# ---- verify --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """A message whose signature holds: who signed it, until when, and on whose behalf."""

    identity: str  # who signed this message (a worker, for a hand-over)
    requester: str  # who asked in the first place: the origin's identity, else `identity`
    exp: float
    hop: int
    envelope: Mapping[str, Any]  # as received (a hand-over embeds it, or its origin)
    origin: Mapping[str, Any] | None  # the first request of the chain, verified


def _check_signature(trusted: TrustedKeys, name: str, task_id: str, kwargs: Any, env: Any) -> str:
    if not isinstance(env, Mapping):
        raise SignatureError("the signature header is not a JSON object")
    if env.get("v") != VERSION:
        raise SignatureError(f"unknown signature version {env.get('v')!r}")
    identity = env.get("identity")
    if not isinstance(identity, str):
        raise SignatureError("the signature names no identity")
    key = trusted.keys.get(identity)
    if key is None:
        raise SignatureError(f"unknown identity {identity!r} (not in {trusted.source})")
    sig = env.get("sig")
    try:
        raw = base64.b64decode(sig if isinstance(sig, str) else "", validate=True)
        key.verify(raw, signed_part(name, task_id, kwargs, env))
    except (InvalidSignature, ValueError, TypeError):
        raise SignatureError(f"bad signature for identity {identity!r}") from None
    for field in ("iat", "exp"):
        if not isinstance(env.get(field), int | float) or isinstance(env.get(field), bool):
            raise SignatureError(f"the signature's {field} is not a number")
    return identity


def verify(
    trusted: TrustedKeys,
    name: str,
    task_id: str | None,
    kwargs: Any,
    env: Any,
    *,
    now: float | None = None,
) -> Verified:
    """Check a message's envelope; raise `SignatureError` saying why it is refused.

    A hand-over (`origin` set) must be signed by a trusted identity (a worker) and embed a
    genuine signed request of a trusted identity, of a kind that hands over
    (`handover_allowed`); its own lifetime is checked, the origin's signature only (the
    first half of a takeover may run for hours).
    """
    now = time.time() if now is None else now
    if env is None:
        raise SignatureError("unsigned message (no zrepq_auth header)")
    if not task_id:
        raise SignatureError("a message without a task id")
    identity = _check_signature(trusted, name, task_id, kwargs, env)
    if float(env["exp"]) < now:
        raise SignatureError(f"expired at {_when(env['exp'])} (signed by {identity!r})")
    if float(env["iat"]) > now + SKEW:
        raise SignatureError(f"issued in the future ({_when(env['iat'])}; check the clocks)")
    hop = env.get("hop", 0)
    if not isinstance(hop, int) or isinstance(hop, bool) or not 0 <= hop <= MAX_HOPS:
        raise SignatureError(f"bad hop count {hop!r}")
    origin = env.get("origin")
    if origin is None:
        if hop != 0:
            raise SignatureError("a hand-over without the request it acts on")
        return Verified(identity, identity, float(env["exp"]), hop, env, None)
    if hop == 0 or not isinstance(origin, Mapping):
        raise SignatureError("a malformed hand-over")
    o_name, o_id, o_kwargs = origin.get("task"), origin.get("id"), origin.get("kwargs")
    if not isinstance(o_name, str) or not isinstance(o_id, str):
        raise SignatureError("a hand-over whose request names no task")
    try:
        requester = _check_signature(trusted, o_name, o_id, o_kwargs, origin.get("auth"))
    except SignatureError as e:
        raise SignatureError(f"the request handed over: {e}") from None
    if isinstance(origin["auth"], Mapping) and origin["auth"].get("origin") is not None:
        raise SignatureError("a hand-over of a hand-over (origin must be the first request)")
    why = handover_refused(name, task_id, kwargs, o_name, o_id, o_kwargs)
    if why:
        raise SignatureError(f"hand-over by {identity!r} refused: {why}")
    return Verified(identity, requester, float(env["exp"]), hop, env, origin)


# Which tasks may be handed on, as what (`tasks/handlers.py` is the only one that does).
_ROLE = ("zrep.failover", "zrep.takeover")
_FANOUT = ("zrep.sync_all", "zrep.sync")


def handover_refused(
    name: str, task_id: str, kwargs: Any, o_name: str, o_id: str, o_kwargs: Any
) -> str | None:
    """Why a hand-over does not follow from its origin (None: it does).

    - the other half of a failover/takeover keeps the task id (`task.replace`): both are
      role tasks with the same id;
    - a member of `sync all` is a `zrep.sync` of the same host as the `zrep.sync_all` it
      came from, with the same flags (and, for `every_tag`, any tag).
    """
    if name in _ROLE and o_name in _ROLE:
        return None if task_id == o_id else "the other half of a role change keeps its id"
    if (name, o_name) == (_FANOUT[1], _FANOUT[0]):
        if not isinstance(kwargs, Mapping) or not isinstance(o_kwargs, Mapping):
            return "arguments are not objects"
        if kwargs.get("host") != o_kwargs.get("host"):
            return "a member of sync all runs on the host of its sync all"
        # `every_tag` asks for each tag configured on the host's datasets: its members name
        # theirs (the worker found them on its own datasets, as it finds the datasets).
        free = {"host", "tag"} if o_kwargs.get("every_tag") else {"host"}
        for k, v in o_kwargs.items():
            if k not in free and kwargs.get(k, v) != v:
                return f"a member of sync all changed {k!r}"
        return None
    return f"{name} does not follow from {o_name}"


def origin_of(name: str, task_id: str, kwargs: Any, verified: Verified) -> dict[str, Any]:
    """What a hand-over embeds: the chain's first request (as signed), never a hand-over."""
    if verified.origin is not None:
        return dict(verified.origin)
    return {"task": name, "id": task_id, "kwargs": kwargs, "auth": dict(verified.envelope)}


def _when(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t)))


def startup_problem(required: bool, trusted_dir: Path | None) -> str | None:
    """Why a worker with these `[signing]` settings must not start (None: it may).

    Deny by default: with signing required, a worker that trusts no key would refuse every
    task, which is a configuration mistake to report at start, not at 3 a.m."""
    try:
        trusted = TrustedKeys.from_dir(trusted_dir)
    except KeyFileError as e:
        return str(e)
    if required and not trusted.keys:
        return (
            f"[signing] trusted ({trusted_dir or 'not set'}) holds no public key: this worker "
            "would refuse every task. Make a producer key with `zrepq keygen NAME` and put "
            "NAME.pub in that directory (ZREPQ_SIGNING_TRUSTED), or set [signing] required = "
            "false (ZREPQ_SIGNING_REQUIRED=0) to run unsigned messages (not recommended)"
        )
    return None
