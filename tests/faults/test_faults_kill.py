"""Scenario 2: the worker is SIGKILLed in the middle of a send, again and again.

Each round writes new data on na, asks for a sync (resume on) and, once `zfs send` runs, waits a
random time and SIGKILLs either the pool process running the task (what the OOM killer does)
or the whole worker (a crash). Then:
- the lease is free again within its TTL (no holder renews it);
- every process of the killed stream (zfs send, ssh on na; pv, zfs recv on nb) is gone;
- every snapshot that had reached both sides is still on both sides, same guid;
- the next sync succeeds, resuming the partial receive when one was left.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

from tests.faults.conftest import LEASE_TTL, Pair
from tests.faults.helpers import (
    done,
    figure,
    lease_holder,
    outcome_of,
    prop,
    same_content,
    send_processes,
    snaps,
    stray_processes,
    wait_for,
    wait_no_strays,
)
from tests.harness.netns import NetBed
from tests.harness.netutil import cmdline, ppid_of

ROUNDS = 6
TTL = float(LEASE_TTL)


def test_sigkill_mid_send_loses_nothing(pair: Callable[..., Pair]) -> None:
    seed = int(os.environ.get("ZREPQ_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    bed, p, na, nb, fs = pair("kill", size=500_000, resume=True)
    for h in (na, nb):  # keep every snapshot, so "nothing lost" means exactly that
        h.zfs.zfs("set", "zrep:savecount=1000", fs)
    confirmed = snaps(nb, fs)
    resumed_rounds = 0
    for rnd in range(ROUNDS):
        whole = rnd % 2 == 1
        where = f"seed {seed}, round {rnd} ({'whole worker' if whole else 'pool process'})"
        na.zfs.write(fs, f"data/r{rnd}.bin", os.urandom(6_000_000))
        r = p.sync(fs, host="na", resume=True)
        sends = wait_for(lambda: send_processes(na, fs), 60)
        assert sends, f"{where}: the send never started"
        runner = ppid_of(sends[0])  # the pool process running the task
        assert runner is not None and "celery" in " ".join(cmdline(runner)), where
        time.sleep(rng.uniform(0.0, 1.8))
        holder = lease_holder(bed, "na", fs)
        doomed = {h: set(pids) for h, pids in stray_processes(bed).items()}
        if whole:
            t_kill = bed.kill_worker("na")
        else:
            os.kill(runner, signal.SIGKILL)
            t_kill = time.monotonic()

        # The lease: nobody renews it any more, so it is gone (or taken anew) within its TTL.
        if holder is not None:
            assert wait_for(lambda h=holder: lease_holder(bed, "na", fs) != h, TTL + 5, 0.02), where
            freed = time.monotonic() - t_kill
            figure("sigkill: lease freed after (s)", round(freed, 2))
            assert freed <= TTL + 0.3, f"{where}: lease held {freed:.2f}s after the kill"

        # Every process of the killed stream is gone, on both hosts.
        gone = wait_for(lambda d=doomed: not _survivors(bed, d), 15, 0.1)
        assert gone, f"{where}: orphaned processes survived: {_survivors(bed, doomed)}"

        if whole:
            bed.start_worker("na")
        else:
            # The pool process died: Celery re-queues the task (acks late, reject on worker
            # lost) and runs it again; it must run, not be refused as a duplicate.
            first = outcome_of(r) if r.ready() else done(r, timeout=120)
            res = first.get("result", {})
            figure(
                "sigkill: re-run of the killed task (status, resumed)",
                (res.get("status") or first.get("error", {}).get("kind"), res.get("resumed")),
            )
            resumed_rounds += bool(res.get("resumed"))
            assert first["ok"], f"{where}: the re-run task failed: {first}"
        assert wait_no_strays(bed) == {}, where

        # Nothing that had reached both sides is gone from either.
        for side in (na, nb):
            now = snaps(side, fs)
            lost = {s for s, g in confirmed.items() if now.get(s) != g}
            assert not lost, f"{where}: {side.name} lost {sorted(lost)}"

        token = prop(nb, "receive_resume_token", fs)
        rec = done(p.sync(fs, host="na", resume=True), timeout=120)
        assert rec["ok"], f"{where}: next sync failed: {rec}"
        if token != "-":
            assert rec["result"]["resumed"], f"{where}: a token was left but not resumed: {rec}"
            resumed_rounds += 1
        assert same_content(na, fs, nb, fs), where
        src, dst = snaps(na, fs), snaps(nb, fs)
        assert src == dst, f"{where}: {src} != {dst}"
        assert prop(nb, "receive_resume_token", fs) == "-"
        confirmed = dst
    figure("sigkill: rounds / resumed", (ROUNDS, resumed_rounds))
    figure("sigkill: snapshots lost", 0)


def _survivors(bed: NetBed, doomed: dict[str, set[int]]) -> dict[str, set[int]]:
    """Which of the `doomed` processes (per host) still run."""
    now = stray_processes(bed)
    left = {h: pids & set(now.get(h, {})) for h, pids in doomed.items()}
    return {h: pids for h, pids in left.items() if pids}
