"""The replication engine: zrep's commands and on-disk contract.

Knows ZFS; imports neither Celery nor Redis.
"""

from .config import EngineConfig
from .engine import Engine
from .errors import ZrepqError

__all__ = ["Engine", "EngineConfig", "ZrepqError"]
