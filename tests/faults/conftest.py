"""Fixtures of the fault tier: `netbed(3)` gives three storage hosts in network namespaces;
`pair("kill", size=...)` gives two of them with a dataset replicated from na to nb.

The bed (namespaces, bridge, Redis, one sshd and one zrepq worker per host) is made once per
session and shared: each test uses its own datasets, and `netbed()` first repairs whatever a
previous test broke on purpose (a stopped worker, a link down, Redis down, a changed host key).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

from producer.api import Producer
from tests.faults.helpers import init_pair, leaf, make_fs, producer
from tests.harness.netns import NetBed, NetHost, netns_unavailable

HOST_NAMES = ("na", "nb", "nc", "nd", "ne")
LEASE_TTL = "4"  # seconds; renewed every TTL/3. Short, so the fault tests wait little.
# Streams through `pv -L` are slow enough to interrupt at a chosen point, fast enough to wait for.
STREAM_RATE = "4m"


@pytest.fixture(scope="session")
def _netbed_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetBed]:
    reason = netns_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the namespace test bed cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"network namespace test bed unavailable: {reason}")
    bed = NetBed(tmp_path_factory.mktemp("netbed"))
    try:
        bed.start(
            {
                "ZREPQ_LEASE_TTL": LEASE_TTL,
                "ZREP_INFILTER": f"pv -q -L {STREAM_RATE}",
            }
        )
        yield bed
    finally:
        bed.close()


@pytest.fixture
def netbed(_netbed_session: NetBed) -> Callable[..., NetBed]:
    """`bed = netbed(3)`: at least three hosts (na, nb, nc), each with sshd and a worker."""

    def make(n: int = 3) -> NetBed:
        bed = _netbed_session
        for name in HOST_NAMES[:n]:
            bed.add_host(name)
        bed.healthy()
        bed.wipe_datasets()
        return bed

    return make


class Pair(NamedTuple):
    bed: NetBed
    p: Producer
    src: NetHost  # na
    dst: NetHost  # nb
    fs: str  # the dataset, under the same name on both


@pytest.fixture
def pair(netbed: Callable[..., NetBed]) -> Callable[..., Pair]:
    """`bed, p, na, nb, fs = pair("kill", size=500_000, resume=True)`: two hosts (na, nb), a
    producer, and a new dataset `tank/kill...` on na holding `size` bytes of data, initialised
    to nb under the same name (other keywords go to the init)."""

    def make(prefix: str, size: int, **init: Any) -> Pair:
        bed = netbed(2)
        p = producer(bed)
        na, nb = bed["na"], bed["nb"]
        fs = f"tank/{leaf(prefix)}"
        make_fs(na, fs, size=size)
        init_pair(p, na, fs, nb, fs, **init)
        return Pair(bed, p, na, nb, fs)

    return make


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.faults.helpers import FIGURES

    if not FIGURES:
        return
    terminalreporter.section("fault tier: measured figures")
    for name, values in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {values}")
