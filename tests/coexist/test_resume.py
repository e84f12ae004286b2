"""issue 12, point 5: receives are resumable by default; a partial receive that will not be
resumed is aborted before anything else is received; pools without the feature still work.
"""

from __future__ import annotations

import os

import pytest

from tests.coexist.conftest import Pair
from tests.harness.zfs_backend import get, ok, scratch_pool, snapshots
from workers.engine import run
from workers.engine.errors import Conflict, PipelineError
from workers.engine.events import Event, Message
from workers.engine.model import DatasetInfo, Snapshot
from workers.engine.requests import InitRequest, SentsyncRequest, SyncRequest, TakeoverRequest
from workers.engine.zfs import ZfsHost

CUT = {"ZREP_INFILTER": "head -c 400000"}  # the stream is cut after 400 kB


def cut_sync(p: Pair, env: dict[str, str] | None = None) -> None:
    """A sync whose stream is cut mid-way (as a dropped link or a killed worker would)."""
    p.write("big", os.urandom(1_500_000))
    with pytest.raises(PipelineError):
        run(p.context({**CUT, **(env or {})}), SyncRequest(fs=p.src))


def same_snapshots(p: Pair, dst: str | None = None) -> bool:
    dst = dst or p.dst
    theirs = snapshots(p.b, dst)
    return theirs == [s for s in snapshots(p.b, p.src) if s in theirs] and all(
        get(p.b, "guid", f"{p.src}@{s}") == get(p.b, "guid", f"{dst}@{s}") for s in theirs
    )


def test_a_cut_stream_is_resumed_by_default(pair: Pair) -> None:
    p = pair
    ctx = p.context()  # no ZREP_RESUME anywhere
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    cut_sync(p)
    assert get(p.b, "receive_resume_token", p.dst) != "-"
    assert "zrep_000001" in snapshots(p.b, p.src)  # kept for the resume, not renamed _unsent
    res = run(ctx, SyncRequest(fs=p.src))
    assert res.resumed and res.status == "synced"
    assert res.completed == [f"{p.src}@zrep_000001"]  # the resumed stream landed it
    assert res.snapshot == f"{p.src}@zrep_000002"
    assert get(p.b, "receive_resume_token", p.dst) == "-"
    assert snapshots(p.b, p.dst) == ["zrep_000000", "zrep_000001", "zrep_000002"]
    assert same_snapshots(p)


def test_a_partial_receive_that_appears_after_the_standby_was_read_is_resumed_at_once(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's pool process is SIGKILLed mid-send and Celery runs the task again at once
    (tests/faults/test_faults_kill.py). The killed run's `zfs recv -s` on the standby is still
    dying when the re-run reads it: no token yet. By the time the re-run's receive starts, it
    has saved its partial state, and the receive is refused for it. The re-run resumes that
    partial receive and sends its own snapshot in the same sync, rather than failing until
    the next one."""
    p = pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    p.write("big", os.urandom(1_500_000))
    ok(p.b, "snapshot", f"{p.src}@zrep_000001")  # the killed run's snapshot, never marked sent
    read_state = ZfsHost.state
    dying: list[str] = []

    def read_then_the_killed_receive_ends(
        host: ZfsHost, name: str
    ) -> tuple[DatasetInfo, list[Snapshot]]:
        seen = read_state(host, name)
        if name == p.dst and not dying:
            dying.append(name)  # the killed run's stream, cut after 400 kB, ends now
            p.b.sh(
                f"zfs send -i @zrep_000000 {p.src}@zrep_000001 | head -c 400000 "
                f"| zfs recv -s {p.dst}"
            )
            assert get(p.b, "receive_resume_token", p.dst) != "-"
        return seen

    monkeypatch.setattr(ZfsHost, "state", read_then_the_killed_receive_ends)
    res = run(ctx, SyncRequest(fs=p.src))
    assert dying and res.status == "synced" and res.resumed
    assert res.completed == [f"{p.src}@zrep_000001"]  # the resumed stream landed it
    assert res.snapshot == f"{p.src}@zrep_000002" and res.base == f"{p.src}@zrep_000001"
    assert any("still running when this sync read it" in w for w in p.warnings())
    assert get(p.b, "receive_resume_token", p.dst) == "-"
    assert snapshots(p.b, p.dst) == ["zrep_000000", "zrep_000001", "zrep_000002"]
    assert p.last_sent(p.src) == p.last_sent(p.dst) == "zrep_000002"
    assert same_snapshots(p)


def test_a_sync_waits_for_a_receive_still_running_and_resumes_what_it_leaves(pair: Pair) -> None:
    """The same race, a little earlier: the killed run's receive is still writing when the
    re-run reads the standby. OpenZFS shows its token already, and refuses the resume while
    it runs (tests/contract/test_send_recv.py): the sync waits for it to end, then resumes
    from the token it leaves and sends its own snapshot."""
    p = pair
    gate = f"/tmp/zrepq-killed-recv-{os.getpid()}"  # on the zfs host: the killed stream ends
    p.b.sh(f"rm -f {gate} {gate}.ready")
    ended: list[str] = []

    class EndOnWait(list[Event]):
        """The events; the first time the sync says it waits, the killed stream ends."""

        def append(self, event: Event) -> None:
            super().append(event)
            if isinstance(event, Message) and "waiting" in event.text and not ended:
                ended.append(event.text)
                p.b.sh(f"touch {gate}")

    p.events = EndOnWait()
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    p.write("big", os.urandom(1_500_000))
    ok(p.b, "snapshot", f"{p.src}@zrep_000001")  # the killed run's snapshot
    # its stream: 400 kB (more than a pipe holds: the receive has begun), then nothing until
    # the gate opens, then cut
    p.b.sh(
        f"(zfs send -i @zrep_000000 {p.src}@zrep_000001 | (head -c 400000; touch {gate}.ready; "
        f"while [ ! -e {gate} ]; do sleep 0.1; done) | zfs recv -s {p.dst}) "
        f">/dev/null 2>&1 </dev/null & while [ ! -e {gate}.ready ]; do sleep 0.1; done"
    )
    try:
        assert get(p.b, "receive_resume_token", p.dst) != "-"  # shown while it runs
        res = run(ctx, SyncRequest(fs=p.src))
    finally:
        p.b.sh(f"touch {gate}; sleep 0.2; rm -f {gate} {gate}.ready")
    assert ended and "still writing into hostb:" in ended[0], ended
    assert res.status == "synced" and res.resumed
    assert res.completed == [f"{p.src}@zrep_000001"]
    assert res.snapshot == f"{p.src}@zrep_000002"
    assert get(p.b, "receive_resume_token", p.dst) == "-"
    assert snapshots(p.b, p.dst) == ["zrep_000000", "zrep_000001", "zrep_000002"]
    assert same_snapshots(p)


def test_a_partial_receive_stops_zrep_from_cron_until_aborted(pair: Pair) -> None:
    """What the migration guide says: zrep without -r cannot receive into a partial state
    zrepq left (it fails, renames its new snapshot _unsent and exits 1, every run); zrepq with
    resume off aborts it first and syncs; then zrep runs clean again."""
    p = pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    cut_sync(p)
    zrep = p.zrep()
    zrun = zrep.sync(p.src)
    assert zrun.rc == 1, zrun
    assert (
        f"cannot receive incremental stream: destination {p.dst} contains partially-complete "
        'state from "zfs receive -s".'
    ) in zrun.stderr
    assert zrun.stderr.endswith(
        f"Error: Problem doing sync for {p.src}@zrep_000002. "
        f"Renamed to {p.src}@zrep_000002_unsent\n"
    ), zrun
    assert get(p.b, "receive_resume_token", p.dst) != "-"

    res = run(p.context({"ZREP_RESUME": "no"}), SyncRequest(fs=p.src))
    assert res.status == "synced" and not res.resumed
    assert any("aborting the partial receive" in w for w in p.warnings())
    assert get(p.b, "receive_resume_token", p.dst) == "-"
    assert same_snapshots(p)

    p.write("f", b"zrep again")
    zrun = zrep.sync(p.src)
    assert zrun.rc == 0 and zrun.stderr == "", zrun


def test_takeover_aborts_a_partial_receive_it_will_never_resume(standin_pair: Pair) -> None:
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    cut_sync(p)
    res = run(p.context(host="hostb"), TakeoverRequest(fs=p.dst, local_only=True, force=True))
    assert res.role == "master"
    assert get(p.b, "receive_resume_token", p.dst) == "-"


def test_a_pool_without_extensible_dataset_is_received_without_s(pair: Pair) -> None:
    """Resume on (the default), standby on a pool created with `zpool create -d`: the first
    receive there is refused for `-s`, sent again without it, and the pool is remembered;
    `ZREP_RESUME=no` never tries."""
    p = pair
    with scratch_pool(p.b, "d", "-d") as old:
        dst = f"{old}/fs"
        ctx = p.context()
        res = run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=dst))
        assert res.snapshot == f"{p.src}@zrep_000000"
        refused = [w for w in p.warnings() if "refused a resumable receive" in w]
        assert refused == [
            f"hostb:{old} refused a resumable receive (no feature@extensible_dataset); "
            "receiving without -s, so a cut stream there starts over (ZREP_RESUME=no skips "
            "this first attempt)"
        ]
        for i in range(2):
            p.write("f", f"{i}".encode())
            assert run(ctx, SyncRequest(fs=p.src)).status == "synced"
        assert len([w for w in p.warnings() if "refused a resumable" in w]) == 1  # learnt
        assert same_snapshots(p, dst)
        assert snapshots(p.b, dst)[-1] == "zrep_000002"


def test_resume_off_never_tries_s(standin_pair: Pair) -> None:
    p = standin_pair
    with scratch_pool(p.b, "d", "-d") as old:
        ctx = p.context({"ZREP_RESUME": "no"})
        run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=f"{old}/fs"))
        p.write("f", b"x")
        run(ctx, SyncRequest(fs=p.src))
        assert not [w for w in p.warnings() if "refused a resumable" in w]


def test_zrep_r_resumes_but_records_the_wrong_snapshot(standin_pair: Pair) -> None:
    """Why the migration guide says to let zrepq finish a partial receive: zrep 2.0.2 with -r
    resumes it, then marks its *new* snapshot sent, which never left; its next sync fails and
    zrepq refuses too, until `sentsync` names the snapshot both sides really have."""
    p = standin_pair
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    cut_sync(p)
    zrun = p.zrep(resume=True).sync(p.src)
    assert zrun.rc == 0, zrun
    assert f"WARNING: setting zrep:sent failed on hostb:{p.dst}@zrep_000002" in zrun.stdout
    assert snapshots(p.b, p.dst) == ["zrep_000000", "zrep_000001"]
    assert p.last_sent(p.src) == "zrep_000002"  # not on the standby
    p.write("f", b"next")
    zrun = p.zrep(resume=True).sync(p.src)
    assert zrun.rc == 1 and "match incremental source" in zrun.stderr, zrun
    with pytest.raises(Conflict, match="older than the last sent"):
        run(ctx, SyncRequest(fs=p.src))
    run(ctx, SentsyncRequest(snapshot=f"{p.src}@zrep_000001"))
    assert run(ctx, SyncRequest(fs=p.src)).status == "synced"
