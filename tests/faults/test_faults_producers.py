"""Scenario 6: two producers ask for the same dataset at the same moment, many times.

Two producers (each its own Celery app and connection) fire at once, released by a barrier:
- two syncs on na's queue (na's worker runs both at the same time, concurrency 2);
- the same with zrep's `-q`: the loser skips quietly, since the pair was synced recently;
- a sync on na and a refresh (pull) of the same pair on nb, two workers on two hosts.
Each round exactly one of them replicates (one new snapshot on both sides); the other reports
`locked` naming the holder, or `skipped` with -q. A sampler never sees two sends of the
dataset at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from tests.faults.conftest import Pair
from tests.faults.helpers import (
    StreamWatch,
    done,
    figure,
    producer,
    same_content,
    snaps,
)

ROUNDS = 9
MODES = ("sync+sync", "sync+sync -q", "sync+refresh")


def test_two_producers_same_dataset_exactly_one_runs(pair: Callable[..., Pair]) -> None:
    bed, p1, na, nb, fs = pair("race", size=200_000)
    p2 = producer(bed)
    tally: dict[str, int] = {}
    with StreamWatch(bed) as watch:
        for rnd in range(ROUNDS):
            mode = MODES[rnd % len(MODES)]
            na.zfs.write(fs, f"data/r{rnd}.bin", os.urandom(2_000_000))
            before = snaps(na, fs)
            barrier = threading.Barrier(2)
            results: dict[int, Any] = {}

            def fire(
                i: int,
                mode: str = mode,
                barrier: threading.Barrier = barrier,
                results: dict[int, Any] = results,
            ) -> None:
                p = (p1, p2)[i]
                barrier.wait()
                if mode == "sync+refresh" and i == 1:
                    results[i] = p.refresh(fs, host="nb")
                elif mode == "sync+sync -q":
                    results[i] = p.sync(fs, host="na", quiet_secs=30)
                else:
                    results[i] = p.sync(fs, host="na")

            threads = [threading.Thread(target=fire, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            recs = [done(results[i], timeout=120) for i in (0, 1)]
            ran = [r for r in recs if r["ok"] and r["result"]["status"] == "synced"]
            others = [r for r in recs if r not in ran]
            where = f"round {rnd} ({mode}): {recs}"
            assert len(ran) == 1 and len(others) == 1, where
            other = others[0]
            if other["ok"]:
                assert mode == "sync+sync -q" and other["result"]["status"] == "skipped", where
                outcome = "skipped"
            else:
                assert other["error"]["kind"] == "locked", where
                assert "held by" in other["error"]["message"], where
                outcome = "locked"
            tally[outcome] = tally.get(outcome, 0) + 1
            after = snaps(na, fs)
            assert len(set(after) - set(before)) == 1, where  # one replication, not two
            assert snaps(nb, fs) == after, where
            assert same_content(na, fs, nb, fs), where
    figure("two producers: rounds / outcomes of the other", (ROUNDS, tally))
    assert watch.max.get(f"na:{fs}", 0) == 1, (watch.max, watch.overlaps)
