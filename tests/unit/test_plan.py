"""The pure planner and the expire rule, with snapshot lists written as short strings.

A list like "0s 1s 2 3u" means: zrep_000000 sent, zrep_000001 sent, zrep_000002 not sent,
zrep_000003_unsent. Guids are derived from the short name, so the same snapshot on both sides
has the same guid, as after a real `zfs recv`; `x:` makes a foreign snapshot.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from workers.engine.errors import Conflict, NotConfigured
from workers.engine.expire import JustSent
from workers.engine.model import DatasetInfo, Snapshot, last_sent, next_snapname
from workers.engine.plan import expire_candidates, is_unchanged, plan_sync

FS = "pool/fs"


def snaps(spec: str, fs: str = FS, guid_salt: str = "") -> list[Snapshot]:
    out = []
    for txg, tok in enumerate(spec.split(), start=1):
        if tok.startswith("x:"):
            short = tok[2:]
            sent = False
        else:
            sent = tok.endswith("s")
            core = tok.rstrip("s")
            unsent = core.endswith("u")
            short = f"zrep_{int(core.rstrip('u')):06x}" + ("_unsent" if unsent else "")
        out.append(
            Snapshot(
                f"{fs}@{short}",
                guid_salt + short,
                txg * 10,
                1000 + txg,
                100 + txg if sent else None,
            )
        )
    return out


def names(ss: list[Snapshot]) -> list[str]:
    return [s.short for s in ss]


def test_plain_incremental_from_last_sent() -> None:
    plan = plan_sync(snaps("0s 1s"), snaps("0 1", "dst/fs"), "zrep", src_fs=FS, dst_fs="dst/fs")
    assert plan.base.short == "zrep_000001"
    assert plan.landed == () and not plan.force and plan.resume_token is None


def test_landed_but_unrecorded_snapshot_is_completed_not_resent() -> None:
    """zrep issue 203: the stream landed, the worker died before `zfs set zrep:sent`."""
    plan = plan_sync(snaps("0s 1s 2"), snaps("0 1 2", "dst/fs"), "zrep", src_fs=FS, dst_fs="dst/fs")
    assert plan.base.short == "zrep_000002"
    assert names(list(plan.landed)) == ["zrep_000002"]


def test_unsent_intermediates_ride_along_and_landed_ones_count() -> None:
    plan = plan_sync(snaps("0s 1s 2u 3"), snaps("0 1 2u 3", "d"), "zrep", src_fs=FS, dst_fs="d")
    assert plan.base.short == "zrep_000003"
    assert names(list(plan.landed)) == ["zrep_000002_unsent", "zrep_000003"]


def test_destination_with_foreign_newest_snapshot_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="diverged"):
        plan_sync(snaps("0s 1s"), snaps("0 1 x:manual", "d"), "zrep", src_fs=FS, dst_fs="d")


def test_force_rolls_destination_back_to_base() -> None:
    plan = plan_sync(
        snaps("0s 1s"), snaps("0 1 x:manual", "d"), "zrep", src_fs=FS, dst_fs="d", force=True
    )
    assert plan.force and plan.base.short == "zrep_000001"


def test_destination_behind_last_sent_is_a_conflict_unless_forced() -> None:
    with pytest.raises(Conflict, match="older than the last sent"):
        plan_sync(snaps("0s 1s 2s"), snaps("0 1", "d"), "zrep", src_fs=FS, dst_fs="d")
    plan = plan_sync(
        snaps("0s 1s 2s"), snaps("0 1", "d"), "zrep", src_fs=FS, dst_fs="d", force=True
    )
    assert plan.base.short == "zrep_000001" and plan.force


def test_modified_destination_is_refused_without_force() -> None:
    with pytest.raises(Conflict, match="modified since"):
        plan_sync(
            snaps("0s 1s"), snaps("0 1", "d"), "zrep", src_fs=FS, dst_fs="d", dest_written=4096
        )
    plan = plan_sync(
        snaps("0s 1s"),
        snaps("0 1", "d"),
        "zrep",
        src_fs=FS,
        dst_fs="d",
        dest_written=4096,
        force=True,
    )
    assert plan.force


def test_resume_token_resumed_or_aborted() -> None:
    on = plan_sync(
        snaps("0s 1s 2"),
        snaps("0 1", "d"),
        "zrep",
        src_fs=FS,
        dst_fs="d",
        resume=True,
        dest_token="1-abc-def",
    )
    assert on.resume_token == "1-abc-def" and not on.abort_token
    off = plan_sync(
        snaps("0s 1s 2"),
        snaps("0 1", "d"),
        "zrep",
        src_fs=FS,
        dst_fs="d",
        resume=False,
        dest_token="1-abc-def",
    )
    assert off.resume_token is None and off.abort_token


def test_uninitialized_source_and_empty_destination() -> None:
    with pytest.raises(NotConfigured, match="initialize"):
        plan_sync(snaps("0 1"), snaps("0 1", "d"), "zrep", src_fs=FS, dst_fs="d")
    with pytest.raises(Conflict, match="no snapshots"):
        plan_sync(snaps("0s"), [], "zrep", src_fs=FS, dst_fs="d")


def test_incremental_across_early_and_late_snaps_with_stuff_in_the_middle() -> None:
    """The seed's to-do: base early, new late, zrep / foreign / _unsent ones between."""
    src = snaps("0s 1 x:hourly 2u x:daily 3")
    plan = plan_sync(src, snaps("0", "d"), "zrep", src_fs=FS, dst_fs="d")
    assert plan.base.short == "zrep_000000"
    assert next_snapname(src, "zrep").seq == 4


def test_next_snapname_counts_unsent_and_ignores_other_tags() -> None:
    assert str(next_snapname(snaps("0s 1s 5u"), "zrep")) == "zrep_000006"
    assert str(next_snapname([], "zrep")) == "zrep_000000"
    assert str(next_snapname(snaps("0s 1s"), "other")) == "other_000000"


def test_last_sent_is_newest_with_local_sent() -> None:
    ss = snaps("0s 1s 2 3u")
    sent = last_sent(ss, "zrep")
    assert sent is not None and sent.short == "zrep_000001"


def test_unchanged_detection() -> None:
    ss = snaps("0s 1s")
    assert is_unchanged(ss, ss[-1], 0)
    assert not is_unchanged(ss, ss[-1], 512)
    ss2 = snaps("0s 1s x:other")
    assert not is_unchanged(ss2, ss2[1], 0)


def test_expire_master_keeps_last_sent_newer_and_savecount_minus_one_older() -> None:
    ss = snaps("0s 1s 2s 3s 4s 5s 6 7u")
    doomed = expire_candidates(ss, "zrep", 3, master=True)
    # last sent = 5: keep 5, the newer 6 and 7u, and savecount-1 = 2 older (3, 4)
    assert names(doomed) == ["zrep_000000", "zrep_000001", "zrep_000002"]


def test_expire_standby_keeps_newest_savecount_and_never_last_sent() -> None:
    ss = snaps("0 1 2 3 4 5")
    assert names(expire_candidates(ss, "zrep", 2, master=False)) == [
        "zrep_000000",
        "zrep_000001",
        "zrep_000002",
        "zrep_000003",
    ]
    protected = expire_candidates(
        ss, "zrep", 2, master=False, protect_guids=frozenset({"zrep_000001"})
    )
    assert "zrep_000001" not in names(protected)
    ss2 = snaps("0 1s 2 3")
    assert "zrep_000001" not in names(expire_candidates(ss2, "zrep", 1, master=False))


def test_expire_never_destroys_last_sent_even_with_savecount_one() -> None:
    ss = snaps("0s 1s 2s")
    doomed = expire_candidates(ss, "zrep", 1, master=True)
    assert names(doomed) == ["zrep_000000", "zrep_000001"]
    assert "zrep_000002" not in names(doomed)


def test_expire_ignores_foreign_snapshots_and_requires_last_sent_on_master() -> None:
    ss = snaps("x:a 0s x:b 1s x:c 2s")
    assert all(s.short.startswith("zrep_") for s in expire_candidates(ss, "zrep", 1, master=True))
    with pytest.raises(NotConfigured):
        expire_candidates(snaps("0 1"), "zrep", 1, master=True)


def test_both_lists_after_a_sync_are_the_start_lists_plus_the_sent_snapshot() -> None:
    # What the end-of-sync expire uses instead of reading either side again (JustSent).
    dinfo = DatasetInfo("pool/dst", "zrep", {})
    before = snaps("0s 1s 2s")
    dst = snaps("1s 2s", fs="pool/dst")  # the standby's, read at the start of the sync
    both = JustSent(before, f"{FS}@zrep_000003", 500, "pool/dst", dinfo, dst).both_sides()
    assert both is not None
    made, got = both
    assert names(made) == ["zrep_000000", "zrep_000001", "zrep_000002", "zrep_000003"]
    assert names(got) == ["zrep_000001", "zrep_000002", "zrep_000003"]
    new, there = made[-1], got[-1]
    assert there.name == "pool/dst@zrep_000003" and (new.sent, there.sent) == (500, 500)
    # one identity on both sides, which no real guid (a number) can be
    assert new.guid == there.guid and not new.guid.isdigit()
    assert new.createtxg > before[-1].createtxg and there.createtxg > dst[-1].createtxg
    assert last_sent(made, "zrep") == new and last_sent(got, "zrep") == there
    assert "zrep_000003" not in names(expire_candidates(made, "zrep", 1, master=True))
    protect = frozenset({new.guid})
    assert names(expire_candidates(got, "zrep", 1, master=False, protect_guids=protect)) == [
        "zrep_000001",
        "zrep_000002",
    ]
    # synconly: the snapshot was already on the source; it is marked sent in place and
    # arrives on the standby with its real guid
    before = snaps("0s 1s 2 x:later")
    again = JustSent(before, f"{FS}@zrep_000002", 600, "pool/dst", dinfo, dst[:1]).both_sides()
    assert again is not None
    assert [s.sent for s in again[0]] == [101, 102, 600, None]
    assert again[1][-1].guid == before[2].guid and again[1][-1].sent == 600
    # the standby had that name before the receive: not a plain receive, None: the caller reads
    assert JustSent(before, f"{FS}@zrep_000002", 1, "pool/dst", dinfo, dst).both_sides() is None
    blank = [*before[:2], replace(before[2], guid="")]
    assert JustSent(blank, f"{FS}@zrep_000002", 1, "pool/dst", dinfo, dst[:1]).both_sides() is None
