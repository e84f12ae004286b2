"""Several standbys per dataset (issue 15): nothing new in ZFS, but what the engine will
rely on when two tags replicate one dataset: each tag's hold and bookmark on a shared
snapshot, counted in `userrefs`; a snapshot stays while any tag holds it; a destroy of a
range is all or nothing; per-tag user properties on snapshots."""

from __future__ import annotations

from tests.harness.zfs_backend import (
    ZfsBackend,
    assert_fails,
    exists,
    get,
    get_src,
    guid,
    ok,
    send_recv,
    snapshots,
    write_file,
    zfs_version,
)

A, B = "zrepq:near:lastsent", "zrepq:far:lastsent"


def source(b: ZfsBackend, n: int = 3) -> str:
    fs = f"{b.base}/src"
    ok(b, "create", fs)
    for i in range(1, n + 1):
        write_file(b, fs, f"f{i}", f"{i}\n".encode())
        ok(b, "snapshot", f"{fs}@s{i}")
    return fs


def busy(b: ZfsBackend, snap: str) -> str:
    if zfs_version(b) >= (2, 3, 2):
        return f"cannot destroy snapshot {snap}: it's being held."
    return f"cannot destroy snapshot {snap}: dataset is busy"


def test_two_tags_hold_one_snapshot(b: ZfsBackend) -> None:
    fs = source(b)
    snap = f"{fs}@s2"
    ok(b, "hold", A, snap)
    ok(b, "hold", B, snap)
    assert get(b, "userrefs", snap) == "2"
    assert_fails(b.zfs("hold", A, snap),
                 f"cannot hold snapshot '{snap}': tag already exists on this dataset")  # fmt: skip
    out = ok(b, "holds", "-H", snap)
    assert sorted(line.split("\t")[1] for line in out.splitlines()) == sorted([A, B])
    # the depth-1 read shows the count per snapshot
    out = ok(b, "get", "-H", "-p", "-o", "name,value", "-d", "1", "-t", "snapshot", "userrefs", fs)
    assert [line.split("\t") for line in out.splitlines()] == [
        [f"{fs}@s1", "0"], [snap, "2"], [f"{fs}@s3", "0"]]  # fmt: skip
    assert_fails(b.zfs("destroy", snap), busy(b, snap))
    ok(b, "release", A, snap)  # one tag moves on: the other still holds it
    assert get(b, "userrefs", snap) == "1"
    assert_fails(b.zfs("destroy", snap), busy(b, snap))
    assert_fails(
        b.zfs("release", A, snap),
        f"cannot release hold from snapshot '{snap}': no such tag on this dataset",
    )
    ok(b, "release", B, snap)
    ok(b, "destroy", snap)
    assert not exists(b, snap)


def test_holds_output_when_nothing_is_held(b: ZfsBackend) -> None:
    fs = source(b, 1)
    res = b.zfs("holds", "-H", f"{fs}@s1")
    assert res.ok and res.stdout == "" and res.stderr == ""
    res = b.zfs("holds", f"{fs}@s1")
    assert res.ok and res.stdout.split() == ["NAME", "TAG", "TIMESTAMP"] and res.stderr == ""


def test_a_range_destroy_is_all_or_nothing(b: ZfsBackend) -> None:
    """An expire that names a range with another tag's held snapshot in it destroys none."""
    fs = source(b, 4)
    ok(b, "hold", B, f"{fs}@s3")
    assert_fails(b.zfs("destroy", f"{fs}@s1%s4"), busy(b, f"{fs}@s3"))
    assert snapshots(b, fs) == ["s1", "s2", "s3", "s4"]
    ok(b, "destroy", f"{fs}@s1,s2")
    assert snapshots(b, fs) == ["s3", "s4"]


def test_each_tag_keeps_a_bookmark_and_either_is_a_base(b: ZfsBackend) -> None:
    fs = source(b, 1)
    near, far = f"{b.base2}/near", f"{b.base2}/far"
    send_recv(b, f"{fs}@s1", f"-u {near}").check()
    send_recv(b, f"{fs}@s1", f"-u {far}").check()
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#zrepq_near")
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#zrepq_far")
    ok(b, "destroy", f"{fs}@s1")
    write_file(b, fs, "f2", b"2\n")
    ok(b, "snapshot", f"{fs}@s2")
    send_recv(b, f"-i {fs}#zrepq_near {fs}@s2", f"-u {near}").check()
    ok(b, "bookmark", f"{fs}@s2", f"{fs}#zrepq_near2")
    ok(b, "destroy", f"{fs}#zrepq_near")  # the near tag moves its cursor; the far one stays
    assert exists(b, f"{fs}#zrepq_far")
    send_recv(b, f"-i {fs}#zrepq_far {fs}@s2", f"-u {far}").check()
    assert guid(b, f"{near}@s2") == guid(b, f"{far}@s2") == guid(b, f"{fs}@s2")


def test_per_tag_properties_on_one_snapshot(b: ZfsBackend) -> None:
    fs = source(b, 2)
    ok(b, "set", "zrepq:near:sent=1700000000", f"{fs}@s2")
    ok(b, "set", "zrepq:far:sent=1700000100", f"{fs}@s2")
    out = ok(b, "get", "-H", "-p", "-o", "name,property,value,source", "-d", "1",
             "-t", "filesystem,snapshot", "zrepq:near:sent,zrepq:far:sent", fs)  # fmt: skip
    assert [line.split("\t") for line in out.splitlines()] == [
        [fs, "zrepq:near:sent", "-", "-"], [fs, "zrepq:far:sent", "-", "-"],
        [f"{fs}@s1", "zrepq:near:sent", "-", "-"], [f"{fs}@s1", "zrepq:far:sent", "-", "-"],
        [f"{fs}@s2", "zrepq:near:sent", "1700000000", "local"],
        [f"{fs}@s2", "zrepq:far:sent", "1700000100", "local"],
    ]  # fmt: skip
    ok(b, "inherit", "zrepq:near:sent", f"{fs}@s2")  # clearing one tag's leaves the other's
    assert get_src(b, "zrepq:far:sent", f"{fs}@s2") == ("1700000100", "local")
    assert get(b, "zrepq:near:sent", f"{fs}@s2") == "-"
