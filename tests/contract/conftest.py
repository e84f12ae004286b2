"""Contract tests: ZFS behaviour zrepq depends on, checked through a `ZfsBackend` only.

They run against the stand-in (tests/standin) now and are written to pass unchanged on real
OpenZFS 2.1 and 2.3 (tests/harness/zfs_backend.py describes the interface).
"""

from __future__ import annotations

import pytest

from tests.harness.zfs_backend import ZfsBackend


@pytest.fixture
def b(zfs_backend: ZfsBackend) -> ZfsBackend:
    return zfs_backend
