"""pytest fixtures: real sshd hosts on loopback ports (see tests/harness/sshd.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.harness.sshd import SshdCluster, SshdHost, sshd_unavailable


@pytest.fixture(scope="session")
def sshd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdCluster]:
    """Every sshd host of the session; all stopped by pid at the end, whatever happened."""
    reason = sshd_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    cluster = SshdCluster(tmp_path_factory.mktemp("sshd"))
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def sshd_host(sshd_cluster: SshdCluster) -> Callable[..., SshdHost]:
    """Factory: `sshd_host("hostb", env={...})` starts (or returns) that host's sshd."""
    return sshd_cluster.host
