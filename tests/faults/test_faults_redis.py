"""Scenario 3: Redis (broker, result backend and lease store) restarts in the middle of a run.

`sync all` runs on na (three masters) and nb (two) while Redis restarts:
- keep_data: a restart that saves and reloads (`systemctl restart` of a Redis that persists).
  The run goes on: every dataset is synced once and the summaries arrive, correct; or, when a
  member finished while Redis was down, that host's summary fails visibly (a ChordError).
- lose_data: a crash of a Redis without persistence. Queues, results and leases are gone.
  Syncs whose lease vanished stop (their renewal finds the key gone); the producer reports
  that the summaries never came (a `timeout` record, never silence). A producer started after
  the crash still finds the hosts, and a new `sync all` syncs everything.
In both, the workers reconnect and consume again, and a process sampler on every host sees
at most one `zfs send` per dataset at any moment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from producer.watch import wait
from tests.faults.helpers import (
    StreamWatch,
    figure,
    init_pair,
    leaf,
    make_fs,
    producer,
    same_content,
    send_processes,
    snaps,
    wait_for,
    wait_no_strays,
)
from tests.harness.netns import NetBed, NetHost


@pytest.mark.parametrize("keep_data", [True, False], ids=["keep_data", "lose_data"])
def test_redis_restart_mid_run(netbed: Callable[..., NetBed], keep_data: bool) -> None:
    bed = netbed(3)
    assert bed.redis is not None
    p = producer(bed)
    na, nb, nc = bed["na"], bed["nb"], bed["nc"]
    pairs: list[tuple[NetHost, str, NetHost]] = [
        *((na, f"tank/{leaf('rs')}", nb) for _ in range(3)),
        *((nb, f"tank/{leaf('rs')}", nc) for _ in range(2)),
    ]
    for src, fs, dst in pairs:
        make_fs(src, fs, size=100_000)
        init_pair(p, src, fs, dst, fs)
        src.zfs.write(fs, "data/new.bin", os.urandom(3_000_000))

    with StreamWatch(bed) as watch:
        results = p.sync_all(["na", "nb"])
        assert wait_for(lambda: any(send_processes(s, fs) for s, fs, _ in pairs), 60)
        time.sleep(0.4)
        t0 = time.monotonic()
        bed.redis.restart(keep_data=keep_data, down_for=1.0)
        figure(
            f"redis restart ({'keep' if keep_data else 'lose'}): down for (s)",
            round(time.monotonic() - t0, 2),
        )
        recs = wait(results, timeout=60 if keep_data else 12, show=False)

        if keep_data:
            for host, rec in recs.items():
                if not rec["ok"]:
                    # A member that ended while Redis was down could not add its result to
                    # the chord: the summary then fails, and says so (never silently).
                    err = rec["error"]
                    assert err["kind"] == "task" and "ChordError" in err["message"], (host, rec)
                    figure("redis restart (keep): summary failed visibly", err["message"][:60])
                    continue
                rows = {r["dataset"]: r for r in rec["result"]["datasets"]}
                assert set(rows) == {fs for s, fs, _ in pairs if s.name == host}
                for row in rows.values():
                    # A row is either synced, or a failure with its reason: never silent.
                    assert row["status"] == "synced" or row.get("error"), row
                figure("redis restart (keep): summary counts", rec["result"]["counts"])
        else:
            for host, rec in recs.items():
                # The summaries were in the Redis that is gone: reported as not arriving.
                if not rec["ok"]:
                    assert rec["error"]["kind"] == "timeout" and host in rec["error"]["message"]
                figure("redis restart (lose): outcome", rec.get("error", {}).get("kind", "ok"))

        assert wait_no_strays(bed, timeout=30) == {}
        # The workers consume again; a producer that starts now still finds every host.
        fresh = producer(bed)
        assert {"na", "nb", "nc"} <= set(wait_for(fresh.hosts, 30) or {})
        for src, fs, _ in pairs:
            src.zfs.write(fs, "data/after.bin", os.urandom(500_000))
        again = wait(fresh.sync_all(["na", "nb"]), timeout=120, show=False)
    for host, rec in again.items():
        assert rec["ok"], (host, rec)
        assert rec["result"]["failed"] == 0, rec
        assert set(rec["result"]["counts"]) == {"synced"}, rec
    for src, fs, dst in pairs:
        assert same_content(src, fs, dst, fs), fs
        assert snaps(dst, fs).items() <= snaps(src, fs).items()
    assert watch.samples > 50
    twice = {fs: n for fs, n in watch.max.items() if n > 1}
    assert not twice, f"datasets sent by two runs at once: {twice}: {watch.overlaps}"
