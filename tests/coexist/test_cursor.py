"""The replication cursor on real OpenZFS too (issue 15, point 1): the engine's bookmark of
the last sent snapshot, and a sync from it when that snapshot is gone (`pair` runs on the
stand-in and, with `--zfs=standin,real`, on OpenZFS 2.1 and 2.3)."""

from __future__ import annotations

import os

from tests.coexist.conftest import HOLD, Pair
from tests.harness.zfs_backend import guid, ok, snapshots, tree
from workers.engine import run
from workers.engine.requests import InitRequest, StatusRequest, SyncRequest


def cursors(p: Pair) -> list[str]:
    out = ok(p.b, "list", "-H", "-t", "bookmark", "-o", "name", "-s", "createtxg", p.src)
    return [line.split("#", 1)[1] for line in out.splitlines()]


def test_sync_from_the_cursor_bookmark_when_the_base_snapshot_is_gone(pair: Pair) -> None:
    p = pair
    ctx = p.context()
    p.write("big.bin", os.urandom(2 << 20))
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    assert cursors(p) == ["zrepq_zrep_000000"]
    p.write("f1", b"one\n")
    run(ctx, SyncRequest(fs=p.src))
    assert cursors(p) == ["zrepq_zrep_000001"]
    assert guid(p.b, f"{p.src}#zrepq_zrep_000001") == guid(p.b, f"{p.dst}@zrep_000001")
    # the base goes: its hold released by hand, then destroyed, and the older one too
    ok(p.b, "release", HOLD, f"{p.src}@zrep_000001")
    ok(p.b, "destroy", f"{p.src}@zrep_000001")
    ok(p.b, "destroy", f"{p.src}@zrep_000000")
    p.write("f2", b"after the base went\n")
    res = run(ctx, SyncRequest(fs=p.src))
    assert res.status == "synced" and res.from_bookmark == f"{p.src}#zrepq_zrep_000001"
    assert res.snapshot == f"{p.src}@zrep_000002"
    assert res.bytes_sent < 1 << 20  # an incremental: the 2 MiB file is not sent again
    assert snapshots(p.b, p.dst) == ["zrep_000000", "zrep_000001", "zrep_000002"]
    assert guid(p.b, f"{p.dst}@zrep_000002") == guid(p.b, f"{p.src}@zrep_000002")
    assert cursors(p) == ["zrepq_zrep_000002"]
    (row,) = run(ctx, StatusRequest(fs=[p.src]))
    assert row.from_bookmark and row.from_bookmark["bookmark"] == res.from_bookmark
    ok(p.b, "mount", p.dst)
    assert tree(p.b, p.dst) == tree(p.b, p.src)
