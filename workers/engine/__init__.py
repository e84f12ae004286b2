"""The replication engine: zrep's commands and on-disk contract.

Knows ZFS; imports neither Celery nor Redis. A caller builds a `Context` (what the engine
needs from outside: transport, locks, observer, peer) and a request (`requests.py`: what the
command takes), and runs it: `run(ctx, SyncRequest(fs="pool/fs"))`, or `sync.sync(ctx, ...)`.
"""

from .config import EngineConfig
from .context import Context
from .errors import ZrepqError
from .verbs import run

__all__ = ["Context", "EngineConfig", "ZrepqError", "run"]
