"""issue 12, point 1: zrepq's holds never pile up, however zrep and zrepq take turns.

After any zrepq operation on a pair each side has at most one `zrepq:zrep:lastsent` hold, on
its current last sent snapshot; every other one is stale (zrep synced in between and moves no
hold) and is released in the same operation, and expire releases it before it destroys.
"""

from __future__ import annotations

import pytest

from tests.coexist.conftest import HOLD, Pair
from tests.harness.zfs_backend import ok, zfs_version
from tests.harness.zrep_actor import ZrepRun
from workers.engine import run, steps
from workers.engine.errors import LockHeld
from workers.engine.requests import (
    ExpireRequest,
    FailoverRequest,
    InitRequest,
    RollbackRequest,
    SyncRequest,
)


def zrep_sync_lines(p: Pair, snap: str) -> list[str]:
    """What `zrep sync` prints for a pair whose two sides have the same savecount."""
    return [
        f"sending {p.src}@{snap} to hostb:{p.dst}",
        f"Expiring zrep snaps on {p.src}",
        f"Also running expire on hostb:{p.dst} now...",
        f"Expiring zrep snaps on {p.dst}",
    ]


def busy_line(p: Pair, name: str) -> str:
    """zfs's own line for a destroy refused because of a hold, as this OpenZFS words it."""
    if zfs_version(p.b) >= (2, 3, 2):
        return (
            f"cannot destroy snapshot {name}: it's being held. "
            f"Run 'zfs holds -r {name}' to see holders."
        )
    return f"cannot destroy snapshot {name}: dataset is busy"


def clean(run: ZrepRun) -> None:
    assert run.rc == 0 and run.stderr == "" and run.refused_destroys == [], run


def test_zrep_and_zrepq_taking_turns_leave_one_hold_and_savecount_snapshots(pair: Pair) -> None:
    """The issue's scenario: a pair set up by zrep, zrep and zrepq syncing it in turn. Before
    the fix, holds sat on four snapshots per side and every zrep run printed `dataset is busy`
    for each side; now zrep's runs are clean and both sides keep exactly savecount (5)."""
    p = pair
    zrep, ctx = p.zrep(), p.context()
    clean(zrun := zrep.init(p.src, "hostb", p.dst))
    transcript = [str(zrun)]
    made = 1
    for i in range(4):  # savecount is reached in round 2; rounds 3 and 4 are the steady state
        p.write("f", f"round {i}, zrep".encode())
        zrun = zrep.sync(p.src)
        made += 1
        clean(zrun)
        assert zrun.stdout.splitlines() == zrep_sync_lines(p, f"zrep_{made - 1:06x}"), zrun
        counts, (ha, hb) = p.look()
        assert counts == (min(made, 5), min(made, 5))
        assert len(ha) <= 1 and len(hb) <= 1  # zrepq's previous one, still in zrep's window
        transcript.append(f"{zrun}holds {ha} / {hb}; snapshots {counts}")

        p.write("f", f"round {i}, zrepq".encode())
        res = run(ctx, SyncRequest(fs=p.src))
        made += 1
        assert res.status == "synced" and res.snapshot == f"{p.src}@zrep_{made - 1:06x}"
        new = res.snapshot.split("@")[1]
        counts, holds = p.look()
        assert holds == ({new: [HOLD]}, {new: [HOLD]})
        assert counts == (min(made, 5), min(made, 5))
        assert p.last_sent(p.src) == p.last_sent(p.dst) == new
        transcript.append(
            f"$ zrepq-local sync {p.src}: {res.status} {new}, expired {res.expired}; "
            f"holds {holds}; snapshots {counts}"
        )
    print("\n".join(transcript))


def test_piled_up_holds_from_before_are_all_released_by_one_sync(standin_pair: Pair) -> None:
    """Holds that an older zrepq left on several snapshots per side (what the issue found):
    the next sync leaves one per side, and someone else's hold stays."""
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    for i in range(3):
        p.write("f", f"{i}".encode())
        run(ctx, SyncRequest(fs=p.src))
    for fs in (p.src, p.dst):
        for n in range(3):  # zrep_000003 carries the current one already
            ok(p.b, "hold", HOLD, f"{fs}@zrep_{n:06x}")
    ok(p.b, "hold", "admin-keep", f"{p.dst}@zrep_000001")
    ha, hb = p.holds()
    assert len(ha) == 4 and len(hb) == 4
    p.write("f", b"next")
    res = run(ctx, SyncRequest(fs=p.src))
    assert res.snapshot == f"{p.src}@zrep_000004"
    assert p.holds() == (
        {"zrep_000004": [HOLD]},
        {"zrep_000001": ["admin-keep"], "zrep_000004": [HOLD]},
    )


def test_zrepq_expire_releases_the_stale_hold_zrep_trips_over(pair: Pair) -> None:
    """savecount zrep runs in a row after a zrepq sync push zrepq's last sent snapshot out of
    zrep's window: zrep prints zfs's refusal once per side, exits 0 and keeps savecount + 1
    (zrep does the same for any held snapshot). The next zrepq operation, here an expire,
    moves the hold to the current last sent snapshot, releases the stale one before
    destroying, and leaves savecount; zrep's next run is clean. (savecount 3: fewer runs.)"""
    p = pair
    zrep, ctx = p.zrep(), p.context({"ZREP_SAVE_COUNT": "3"})
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    p.write("f", b"zrepq")
    run(ctx, SyncRequest(fs=p.src))  # zrep_000001, held
    runs = []
    for i in range(3):
        p.write("f", f"zrep {i}".encode())
        runs.append(zrep.sync(p.src))
    for zrun in runs[:-1]:
        clean(zrun)
    last = runs[-1]  # zrep_000004: zrep_000001 falls out of the window on both sides
    assert last.rc == 0, last
    assert last.refused_destroys == [
        busy_line(p, f"{p.src}@zrep_000001"),
        busy_line(p, f"{p.dst}@zrep_000001"),
    ], last
    assert p.counts() == (4, 4)

    res = run(ctx, ExpireRequest(fs=p.src))
    assert res.destroyed == [f"{p.src}@zrep_000001"]
    assert res.remote_destroyed == [f"{p.dst}@zrep_000001"]
    assert p.look() == ((3, 3), ({"zrep_000004": [HOLD]}, {"zrep_000004": [HOLD]}))

    p.write("f", b"zrep again")
    clean(zrep.sync(p.src))
    assert p.counts() == (3, 3)


def test_expire_alone_moves_the_hold_and_a_settled_pair_costs_no_call(standin_pair: Pair) -> None:
    """After zrep syncs, a zrepq expire puts the hold on the current last sent snapshot; on a
    pair whose hold already sits there it runs no `zfs hold` or `zfs release` at all."""
    p = standin_pair
    zrep, ctx = p.zrep(), p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    clean(zrep.sync(p.src))
    assert p.holds() == ({"zrep_000000": [HOLD]}, {"zrep_000000": [HOLD]})
    run(ctx, ExpireRequest(fs=p.src))
    assert p.holds() == ({"zrep_000001": [HOLD]}, {"zrep_000001": [HOLD]})
    calls: list[str] = []
    run(p.context(calls=calls), ExpireRequest(fs=p.src))
    assert calls and not [c for c in calls if c.split()[0] in ("hold", "release")], calls
    assert p.holds() == ({"zrep_000001": [HOLD]}, {"zrep_000001": [HOLD]})


def test_rolling_back_past_our_held_snapshot_is_not_refused(standin_pair: Pair) -> None:
    """`sync fs@snap` and `failover -L fs@snap` roll back past the last sent snapshot, which
    carries our hold: the hold is released first (a held snapshot stops `rollback -r` with
    "dataset is busy"), and the hold ends on the snapshot rolled back to."""
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    for i in range(3):
        p.write("f", f"{i}".encode())
        run(ctx, SyncRequest(fs=p.src))
    res = run(ctx, RollbackRequest(snapshot=f"{p.src}@zrep_000001"))
    assert res.status == "rolled-back"
    assert p.holds() == ({"zrep_000001": [HOLD]}, {"zrep_000001": [HOLD]})
    p.write("f", b"after the rollback")
    assert run(ctx, SyncRequest(fs=p.src)).snapshot == f"{p.src}@zrep_000004"
    role = run(ctx, FailoverRequest(fs=f"{p.src}@zrep_000002", local_only=True))
    assert role.rolled_back_to == f"{p.src}@zrep_000002"
    src_holds, _ = p.holds()
    assert src_holds == {}  # the held zrep_000004 went with the rollback, released first


def test_a_busy_pair_is_left_alone(standin_pair: Pair) -> None:
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    with steps.lock(ctx, [("hosta", p.src)], "sync"), pytest.raises(LockHeld):
        run(ctx, ExpireRequest(fs=p.src))
    assert p.holds() == ({"zrep_000000": [HOLD]}, {"zrep_000000": [HOLD]})
