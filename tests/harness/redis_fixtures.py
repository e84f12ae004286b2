"""pytest fixtures: one real redis-server for the session, a clean db per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import redis

from tests.harness.redis_server import RedisServer


def _missing(reason: str) -> None:
    # In CI a missing server is a broken machine, not a reason to pass quietly.
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server; `redis_server.restart()` for fault tests."""
    if shutil.which("redis-server") is None:
        _missing("redis-server not found on PATH (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on an emptied db; the server is (re)started if a test left it down."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis_server.client(socket_timeout=5)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()
