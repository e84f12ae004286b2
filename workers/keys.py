"""Every name zrepq itself gives in Redis and on the broker: keys, queues, node and probe names.

(Celery's and redbeat's own keys are theirs; this is the schema for ours, all under `zrepq:`
for keys and `zrepq.` for queues.) Producers reach these names through `tasks.contract`,
which re-exports them. Leases are kept under `zrepq:lock:<name>`, where the name is the
engine's `lock_name(tag, host, fs)`.
"""

from __future__ import annotations

from workers.engine.locks import lock_name

PREFIX = "zrepq:"
LOCK_PREFIX = PREFIX + "lock:"

# Hash host -> JSON {queue, node, registered}: the storage hosts whose workers have started.
HOSTS_KEY = PREFIX + "hosts"
# Hash TAG:HOST:FS -> JSON record of the last syncs of that dataset (`tasks/ops.py`).
SYNCS_KEY = PREFIX + "syncs"
# redbeat's schedule entries and its lock (`zrepq:beat::lock`); `[scheduler] key_prefix`.
BEAT_PREFIX = PREFIX + "beat:"

# The broker queue each storage host's worker consumes (Celery names it; we choose it).
QUEUE_PREFIX = "zrepq.host."
# Where a task sent without a queue lands; no worker consumes it (every task names its host).
DEFAULT_QUEUE = "zrepq.default"
# The task `zrepq-worker --check` sends through the host's queue to prove it is consumed.
PROBE_TASK = "zrepq.probe"


def lease_key(name: str, prefix: str = LOCK_PREFIX) -> str:
    """Redis key of the lease called `name` (as passed to `Locks.hold`)."""
    return prefix + name


def lock_key(tag: str, host: str, fs: str) -> str:
    """Redis key of the lease on dataset `fs` of `host` for replication tag `tag`."""
    return lease_key(lock_name(tag, host, fs))


def sync_record_field(tag: str, host: str, fs: str) -> str:
    """Field of dataset `fs` of `host` under `tag` in the `SYNCS_KEY` hash."""
    return f"{tag}:{host}:{fs}"


def queue_name(host: str) -> str:
    return QUEUE_PREFIX + host


def node_name(host: str) -> str:
    """The Celery node name of `host`'s worker (`celery worker -n`)."""
    return f"zrepq@{host}"


def node_host(node: str) -> str:
    """The host of a worker's node name (`zrepq@hosta` -> `hosta`)."""
    return node.split("@", 1)[1] if "@" in node else node


# Replay guard (`tasks/guard.py`): `zrepq:seen:HOST:TASKID:HOP` -> "run" | "done", kept until
# the message expires. Per host, so a worker writes only its own host's keys.
SEEN_PREFIX = PREFIX + "seen:"


def seen_key(host: str, task_id: str, hop: int = 0) -> str:
    return f"{SEEN_PREFIX}{host}:{task_id}:{hop}"
