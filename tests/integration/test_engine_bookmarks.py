"""The replication cursor (issue 15, point 1): a bookmark of the last sent snapshot on the
source, moved forward each sync, and the incremental's base when that snapshot is gone."""

from __future__ import annotations

import pytest

from tests.harness.fleet import Fleet, Site
from tests.integration import test_engine_sync as base
from tests.integration.test_engine_sync import holds, init, snaps
from workers.engine import run
from workers.engine.errors import Conflict
from workers.engine.formats import status_text
from workers.engine.requests import StatusRequest, SyncRequest

HOLD = "zrepq:zrep:lastsent"
Pair = tuple[Fleet, Site, Site]
pair = pytest.fixture(base.pair.__wrapped__)  # hosta with pool/prod, hostb


def bookmarks(site: Site, fs: str) -> list[str]:
    out = site.zfs.zfs("list", "-H", "-t", "bookmark", "-o", "name", "-s", "createtxg", fs).stdout
    return [line.split("#", 1)[1] for line in out.splitlines() if line]


def test_each_sync_moves_the_cursor_bookmark_with_the_hold(pair: Pair) -> None:
    f, a, b = pair
    src = a.fs("prod")
    init(f, a, b)
    assert bookmarks(a, src) == ["zrepq_zrep_000000"]
    ctx = f.context("hosta")
    for n in (1, 2):
        res = run(ctx, SyncRequest(fs=src))
        assert res.status == "synced" and res.from_bookmark is None
        assert bookmarks(a, src) == [f"zrepq_zrep_{n:06x}"]
        assert holds(a, f"{src}@zrep_{n:06x}") == [HOLD]
    # the standby gets no bookmark: the cursor is the sender's
    assert bookmarks(b, b.fs("prod")) == []


def test_a_lost_base_snapshot_is_sent_from_its_bookmark_not_reseeded(pair: Pair) -> None:
    f, a, b = pair
    src, dst = a.fs("prod"), b.fs("prod")
    init(f, a, b)
    ctx = f.context("hosta")
    run(ctx, SyncRequest(fs=src))
    # someone releases zrepq's hold and destroys the base, and the older snapshot too
    a.zfs.zfs("release", HOLD, f"{src}@zrep_000001")
    a.zfs.zfs("destroy", f"{src}@zrep_000001")
    a.zfs.zfs("destroy", f"{src}@zrep_000000")
    a.zfs.write(src, "after.txt", b"written after the base went\n")
    before = snaps(b, dst)
    res = run(ctx, SyncRequest(fs=src))
    assert res.status == "synced" and res.snapshot == f"{src}@zrep_000002"
    assert res.from_bookmark == res.base == f"{src}#zrepq_zrep_000001"
    assert res.bytes_sent < 100_000  # an incremental, not the 300 kB full stream
    sends = a.zfs.zfs_calls("send")
    assert sends[-1][-3:] == ["-i", f"{src}#zrepq_zrep_000001", f"{src}@zrep_000002"]
    # the destination's matching snapshot stays; the new one arrived with the same guid
    assert snaps(b, dst) == [*before, "zrep_000002"]
    get = ("get", "-H", "-o", "value", "guid")
    assert (
        b.zfs.zfs(*get, f"{dst}@zrep_000002").stdout == a.zfs.zfs(*get, f"{src}@zrep_000002").stdout
    )
    b.zfs.zfs("mount", dst)
    assert b.zfs.read(dst, "after.txt") == b"written after the base went\n"
    assert bookmarks(a, src) == ["zrepq_zrep_000002"]
    # status says so, in --json and -v
    (row,) = run(ctx, StatusRequest(fs=[src]))
    assert row.from_bookmark is not None
    assert row.from_bookmark["bookmark"] == f"{src}#zrepq_zrep_000001"
    text = status_text([row], verbose=True)
    assert f"synced from bookmark {src}#zrepq_zrep_000001 at " in text
    # and the next sync is an ordinary one again
    res = run(ctx, SyncRequest(fs=src))
    assert res.from_bookmark is None and res.base == f"{src}@zrep_000002"


def test_without_a_cursor_a_lost_base_is_still_a_conflict(pair: Pair) -> None:
    """ZREPQ_BOOKMARKS=off: no bookmark is made, and a lost base fails as before."""
    f, a, b = pair
    src = a.fs("prod")
    init(f, a, b, ZREPQ_BOOKMARKS="off")
    ctx = f.context("hosta", {"ZREPQ_BOOKMARKS": "off"})
    run(ctx, SyncRequest(fs=src))
    assert bookmarks(a, src) == []
    a.zfs.zfs("release", HOLD, f"{src}@zrep_000001")
    a.zfs.zfs("destroy", f"{src}@zrep_000001")
    with pytest.raises(Conflict, match="diverged"):
        run(ctx, SyncRequest(fs=src))
