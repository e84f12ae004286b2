"""Scenario 5: a worker is paused (SIGSTOP) past its lease while another run takes the lease.

The whole worker of na (main process and pool) is stopped in the middle of a sync: once in the
middle of the stream, once right after it made its new snapshot (before the stream). Its lease
lapses; the standby nb then pulls (`refresh`), which takes the same lease and completes. Then
the paused worker is continued (SIGCONT). It must notice at once that its lease is gone and
stop: its task fails with `lock-lost`, and it writes nothing more on either host (no
`zrep:sent`, no hold, no rename or destroy of its snapshot, no error flag); all it may do is
clear its own `zrep:lock-pid` mark on na, which is still its own (set only where zrep is
installed: not here, so it writes nothing). Both sides stay
consistent: the same snapshots with the same guids, one hold each on the last sent one, the
same bytes, no error flag, and the next sync succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import LEASE_TTL, Pair
from tests.faults.helpers import (
    done,
    figure,
    lease_holder,
    mutating_calls,
    prop,
    same_content,
    send_processes,
    snaps,
    wait_for,
    wait_no_strays,
)
from tests.harness.netns import NetHost

TTL = float(LEASE_TTL)


def _wait_call(host: NetHost, argv_part: list[str], timeout: float) -> bool:
    """Poll `host`'s stand-in call log (each zfs call appends a line as it starts)."""
    log = host.root / "calls.log"
    seen = log.stat().st_size if log.exists() else 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.stat().st_size > seen:
            with open(log, "rb") as fh:
                fh.seek(seen)
                chunk = fh.read()
            seen += len(chunk)
            for line in chunk.splitlines():
                argv = json.loads(line)["argv"]
                if all(any(a.startswith(part) for a in argv) for part in argv_part):
                    return True
        time.sleep(0.002)
    return False


def _holds(host: NetHost, fs: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for short in snaps(host, fs):
        lines = host.zfs.zfs("holds", "-H", f"{fs}@{short}").stdout.splitlines()
        tags = [line.split("\t")[1] for line in lines if line]
        if tags:
            out[short] = tags
    return out


@pytest.mark.parametrize("moment", ["mid-stream", "after-snapshot"])
def test_paused_worker_cannot_write_after_its_lease(pair: Callable[..., Pair], moment: str) -> None:
    bed, p, na, nb, fs = pair("pause", size=300_000)
    na.zfs.write(fs, "data/big.bin", os.urandom(4_000_000))
    worker = na.worker
    assert worker is not None

    r = p.sync(fs, host="na")
    if moment == "mid-stream":
        assert wait_for(lambda: send_processes(na, fs), 60)
        time.sleep(0.3)
        os.killpg(worker.pid, signal.SIGSTOP)
    else:
        # Stopped as its `zfs snapshot` starts: the snapshot (a child in a process group of
        # its own) completes, the worker is frozen before it streams.
        assert _wait_call(na, ["snapshot", f"{fs}@zrep_"], 60), "never saw the zfs snapshot"
        os.killpg(worker.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    holder = lease_holder(bed, "na", fs)
    assert holder is not None and r.id in holder
    try:
        # The lease lapses: nobody renews it while the worker is stopped.
        assert wait_for(lambda: lease_holder(bed, "na", fs) is None, TTL + 3, 0.02)
        figure(f"pause ({moment}): lease lapsed after (s)", round(time.monotonic() - stopped_at, 2))
        # Another run takes it: the standby pulls.
        rec = done(p.refresh(fs, host="nb"), timeout=120)
        assert rec["ok"], rec
        if moment == "mid-stream":
            # The paused worker's stream ran on and landed: recognised by guid, not resent.
            assert rec["result"]["completed"], rec
        taken_over = snaps(nb, fs)
        assert same_content(na, fs, nb, fs)
        assert wait_no_strays(bed) == {}  # the stale stream (if any) has ended too
    finally:
        resumed_at = time.time()
        os.killpg(worker.pid, signal.SIGCONT)

    stale = done(r, timeout=60)
    assert not stale["ok"], stale
    assert stale["error"]["kind"] == "lock-lost", stale
    assert "lost the lease" in stale["error"]["message"]
    time.sleep(1.0)  # anything the stale run would still do, it has done by now

    # No late writes: after SIGCONT, the stale run changed nothing on either host, but for
    # clearing its own zrep:lock-pid mark on na had it set one (zrep installed on na; under
    # zrep's global lock, and only because the mark was still its own: a mark naming a live
    # process would keep every other zrepq and zrep on na away from the dataset).
    own_mark = [["zfs", "inherit", f"zrep:{p}", fs] for p in ("lock-time", "lock-pid")]
    late = [c for c in mutating_calls(na, resumed_at) if c not in own_mark]
    late += mutating_calls(nb, resumed_at)
    assert late == [], late
    assert prop(na, "zrep:lock-pid", fs) == "-"
    figure(f"pause ({moment}): zfs writes after SIGCONT", len(late))

    # Both sides consistent, no error flag, one hold per side on the last sent snapshot.
    assert snaps(na, fs) == snaps(nb, fs) == taken_over
    last = list(taken_over)[-1]
    assert _holds(na, fs) == {last: ["zrepq:zrep:lastsent"]}
    assert _holds(nb, fs) == {last: ["zrepq:zrep:lastsent"]}
    assert prop(na, "zrepq:zrep:last-error", fs) == "-"
    assert same_content(na, fs, nb, fs)
    na.zfs.write(fs, "after.txt", b"after the pause\n")
    rec = done(p.sync(fs, host="na"))
    assert rec["ok"], rec
    assert same_content(na, fs, nb, fs)
