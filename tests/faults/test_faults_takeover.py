"""A dead lease holder on this host no longer blocks for a whole TTL (issue 12, point 4).

na's worker runs here with a 30 s lease TTL (the bed's other tests use 4 s), so a run that
merely waited for the dead holder's lease to expire would take ~30 s and cannot pass for a
takeover. Three rounds SIGKILL the pool process running a sync mid-send: Celery re-queues the
task (acks late, reject on worker lost) and its re-run, in another pool process, must take
the dead run's lease over at once, resume the partial receive and leave both sides identical.
Then the whole worker is killed mid-send and restarted, and the next sync, sent right away,
must run instead of failing `locked` against the dead pool process's lease.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from tests.faults.helpers import (
    done,
    figure,
    init_pair,
    leaf,
    lease_holder,
    make_fs,
    producer,
    prop,
    same_content,
    send_processes,
    snaps,
    wait_for,
    wait_no_strays,
)
from tests.harness.netns import NetBed
from tests.harness.netutil import cmdline, ppid_of
from workers.engine.locks import LockToken

TTL = 30.0
ROUNDS = 3


def test_a_killed_holders_lease_is_taken_over_at_once(netbed: Callable[..., NetBed]) -> None:
    bed = netbed(2)
    na, nb = bed["na"], bed["nb"]
    bed.stop_worker("na")
    bed.start_worker("na", ZREPQ_LEASE_TTL=str(int(TTL)))
    try:
        p = producer(bed)
        fs = f"tank/{leaf('takeover')}"
        make_fs(na, fs, size=300_000)
        init_pair(p, na, fs, nb, fs, resume=True)
        for h in (na, nb):
            h.zfs.zfs("set", "zrep:savecount=1000", fs)

        for rnd in range(ROUNDS):
            where = f"round {rnd}"
            na.zfs.write(fs, f"data/r{rnd}.bin", os.urandom(4_000_000))
            r = p.sync(fs, host="na", resume=True)
            sends = wait_for(lambda: send_processes(na, fs), 60)
            assert sends, f"{where}: the send never started"
            runner = ppid_of(sends[0])
            assert runner is not None and "celery" in " ".join(cmdline(runner)), where
            time.sleep(0.5)
            dead = lease_holder(bed, "na", fs)
            parsed = LockToken.parse(dead)
            assert parsed is not None and parsed.pid == runner and r.id in parsed.operation
            os.kill(runner, signal.SIGKILL)
            t_kill = time.monotonic()

            def rerun_holds(d: str | None = dead) -> bool:
                now = lease_holder(bed, "na", fs)
                return now is not None and now != d

            assert wait_for(rerun_holds, TTL + 10, 0.01), f"{where}: nobody took the lease"
            taken = time.monotonic() - t_kill
            new = LockToken.parse(lease_holder(bed, "na", fs))
            figure("takeover: SIGKILL of the pool process -> re-run holds the lease (s)", taken)
            assert new is not None and r.id in new.operation and new.pid != runner, where
            assert taken < TTL / 3, f"{where}: the re-run waited {taken:.1f}s (TTL {TTL:.0f}s)"

            rec = done(r, timeout=120)
            assert rec["ok"], f"{where}: the re-run failed: {rec}"
            figure("takeover: re-run resumed", rec["result"].get("resumed"))
            assert wait_no_strays(bed) == {}, where
            assert prop(nb, "receive_resume_token", fs) == "-", where
            assert snaps(na, fs) == snaps(nb, fs), where
            assert same_content(na, fs, nb, fs), where

        # The whole worker dies mid-send; restarted, the next sync runs at once.
        na.zfs.write(fs, "data/last.bin", os.urandom(4_000_000))
        r = p.sync(fs, host="na", resume=True)
        assert wait_for(lambda: send_processes(na, fs), 60)
        time.sleep(0.5)
        dead = lease_holder(bed, "na", fs)
        assert dead is not None
        bed.kill_worker("na")
        bed.start_worker("na", ZREPQ_LEASE_TTL=str(int(TTL)))
        assert lease_holder(bed, "na", fs) == dead  # still there: nobody released it
        t_sent = time.monotonic()
        rec = done(p.sync(fs, host="na", resume=True), timeout=120)
        figure("takeover: restarted worker, next sync done after (s)", time.monotonic() - t_sent)
        assert rec["ok"], f"the next sync after a worker crash failed: {rec}"
        assert time.monotonic() - t_sent < TTL / 2
        assert snaps(na, fs) == snaps(nb, fs)
        assert same_content(na, fs, nb, fs)
    finally:
        bed.stop_worker("na")
        bed.start_worker("na")  # back to the bed's own settings for the next tests
