"""The host registry and the sync records in Redis: one key per host, read across hosts.

Each worker writes only keys named after its own host (`zrepq:host:HOST`, the hash
`zrepq:syncs:HOST`), so its Redis ACL user needs no write access to another host's
(`deploy/redis-acl.conf`). Readers (producers, the scheduler, the exporter, Flower's
viewers) find the hosts' keys with SCAN, which needs no key permission and visits each key
once per full pass; the values then come in one MGET per batch, or one HGETALL per host.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from workers.keys import HOST_PREFIX, SYNCS_PREFIX, host_key

log = logging.getLogger(__name__)

_SCAN_COUNT = 1000  # keys looked at per SCAN call: few round trips, each one short
_MGET_BATCH = 500


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _keys(client: Any, prefix: str) -> Iterator[str]:
    """Every key under `prefix` (no glob character in zrepq's prefixes), each once."""
    seen: set[str] = set()
    for raw in client.scan_iter(match=prefix + "*", count=_SCAN_COUNT):
        key = _text(raw)
        if key not in seen:  # SCAN may return a key twice while the keyspace is rehashed
            seen.add(key)
            yield key


def register(client: Any, host: str, entry: dict[str, Any]) -> None:
    """Record `host` (its worker, on its own Redis user) in the registry."""
    client.set(host_key(host), json.dumps(entry))


def is_registered(client: Any, host: str) -> bool:
    return bool(client.exists(host_key(host)))


def registered(client: Any) -> dict[str, dict[str, Any]]:
    """Every registered host and its entry ({queue, node, registered})."""
    keys = sorted(_keys(client, HOST_PREFIX))
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(keys), _MGET_BATCH):
        batch = keys[i : i + _MGET_BATCH]
        for key, raw in zip(batch, client.mget(batch), strict=True):
            if raw is None:
                continue  # deleted between the SCAN and the MGET
            try:
                entry = json.loads(raw)
            except ValueError:
                log.warning("registry entry %s is not JSON; ignored", key)
                continue
            out[key.removeprefix(HOST_PREFIX)] = entry if isinstance(entry, dict) else {}
    return out


def sync_record_keys(client: Any) -> list[str]:
    """The `zrepq:syncs:HOST` hashes, one per host that has recorded a sync."""
    return sorted(_keys(client, SYNCS_PREFIX))


def read_sync_records(client: Any) -> list[dict[str, Any]]:
    """Every host's sync records (for metrics and `status --fleet`)."""
    out = []
    for key in sync_record_keys(client):
        for raw in client.hgetall(key).values():
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out
