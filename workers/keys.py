"""Every name zrepq itself gives in Redis and on the broker: keys, queues, node and probe names.

(Celery's and redbeat's own keys are theirs; this is the schema for ours, all under `zrepq:`
for keys and `zrepq.` for queues.) Producers reach these names through `tasks.contract`,
which re-exports them. Leases are kept under `zrepq:lock:<name>`, where the name is the
engine's `lock_name(tag, host, fs)` = `HOST:TAG:FS`.

Every key a worker writes names its host right after the family (`zrepq:lock:HOST:…`,
`zrepq:host:HOST`, `zrepq:syncs:HOST`, `zrepq:seen:HOST:…`; a host name holds no `:`), so
each host's worker gets a Redis ACL user that may write its own host's keys and only read
the others' (`deploy/redis-acl.conf`).
"""

from __future__ import annotations

from workers.engine.locks import lock_name

PREFIX = "zrepq:"
LOCK_PREFIX = PREFIX + "lock:"

# `zrepq:host:HOST` -> JSON {queue, node, registered}: one key per storage host whose worker
# has started, written by that worker only; producers list them with SCAN (`tasks.registry`).
HOST_PREFIX = PREFIX + "host:"
# `zrepq:syncs:HOST`: a hash TAG:HOST:FS -> JSON record of the last syncs of each dataset of
# that host, written by its worker only (`tasks/ops.py`).
SYNCS_PREFIX = PREFIX + "syncs:"
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


def host_key(host: str) -> str:
    """Registry entry of `host` (`zrepq:host:HOST`)."""
    return HOST_PREFIX + host


def syncs_key(host: str) -> str:
    """The hash of `host`'s sync records (`zrepq:syncs:HOST`)."""
    return SYNCS_PREFIX + host


def sync_record_field(tag: str, host: str, fs: str) -> str:
    """Field of dataset `fs` of `host` under `tag` in `syncs_key(host)`."""
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
