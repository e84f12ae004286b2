"""Every Redis key zrepq itself writes is named here, all under `zrepq:`.

(Celery's and redbeat's keys are theirs; this is the schema for ours.) Leases are kept under
`zrepq:lock:<name>`, where the name is the engine's `lock_name(tag, host, fs)`.
"""

from __future__ import annotations

from workers.engine.locks import lock_name

PREFIX = "zrepq:"
LOCK_PREFIX = PREFIX + "lock:"


def lease_key(name: str, prefix: str = LOCK_PREFIX) -> str:
    """Redis key of the lease called `name` (as passed to `Locks.hold`)."""
    return prefix + name


def lock_key(tag: str, host: str, fs: str) -> str:
    """Redis key of the lease on dataset `fs` of `host` for replication tag `tag`."""
    return lease_key(lock_name(tag, host, fs))


# Hash host -> JSON {queue, node, registered}: the storage hosts whose workers have started.
HOSTS_KEY = PREFIX + "hosts"

# The broker queue each storage host's worker consumes (Celery names it; we choose it).
QUEUE_PREFIX = "zrepq.host."


def queue_name(host: str) -> str:
    return QUEUE_PREFIX + host
