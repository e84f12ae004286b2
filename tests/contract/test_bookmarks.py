"""Bookmarks: `zfs bookmark`, `#` names in list/get/destroy, and `zfs send -i fs#bm` as the
replication cursor when the base snapshot is gone (issue 15), with OpenZFS's refusals."""

from __future__ import annotations

import os

from tests.harness.zfs_backend import (
    ZfsBackend,
    assert_fails,
    exists,
    get,
    guid,
    ok,
    send_recv,
    snapshots,
    tree,
    write_file,
)


def source(b: ZfsBackend, n: int = 2) -> str:
    """`base/src` with snapshots s1..sN, a file changed in each."""
    fs = f"{b.base}/src"
    ok(b, "create", fs)
    for i in range(1, n + 1):
        write_file(b, fs, f"f{i}", f"content {i}\n".encode())
        ok(b, "snapshot", f"{fs}@s{i}")
    return fs


def rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines()]


def test_bookmark_keeps_the_snapshots_guid_createtxg_and_creation(b: ZfsBackend) -> None:
    fs = source(b)
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#b1")
    ok(b, "bookmark", f"{fs}@s1", "#short")  # the new bookmark's fs defaults to the source's
    ok(b, "bookmark", f"{fs}#b1", f"{fs}#copy")  # from a bookmark (2.1 and 2.3)
    out = ok(b, "list", "-H", "-p", "-t", "bookmark", "-o", "name,guid,createtxg,creation", fs)
    snap = [get(b, p, f"{fs}@s1") for p in ("guid", "createtxg", "creation")]
    assert rows(out) == [[f"{fs}#{n}", *snap] for n in ("b1", "copy", "short")]
    # `get all` of a bookmark: these and nothing else, no user properties
    out = ok(b, "get", "-H", "-o", "property,source", "all", f"{fs}#b1")
    props = {p: s for p, s in rows(out)}
    assert set(props) == {"type", "creation", "referenced", "createtxg", "guid",
                          "logicalreferenced"}  # fmt: skip
    assert set(props.values()) == {"-"}
    assert get(b, "type", f"{fs}#b1") == "bookmark"
    ok(b, "set", "zrep:x=1", f"{fs}@s1")
    assert get(b, "zrep:x", f"{fs}#b1") == "-"  # asked by name: "-", not an error
    out = ok(b, "get", "-H", "-o", "value", "used,written,userrefs,mountpoint", f"{fs}#b1")
    assert out.split() == ["-"] * 4


def test_depth1_read_lists_bookmarks_after_snapshots_and_before_children(
    b: ZfsBackend,
) -> None:
    fs = source(b, 3)
    ok(b, "create", f"{fs}/kid")
    ok(b, "bookmark", f"{fs}@s3", f"{fs}#a_newest")
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#z_oldest")
    out = ok(b, "get", "-H", "-p", "-o", "name,property,value", "-d", "1",
             "-t", "filesystem,snapshot,bookmark", "guid", fs)  # fmt: skip
    names = [r[0] for r in rows(out)]
    assert names == [fs, f"{fs}@s1", f"{fs}@s2", f"{fs}@s3", f"{fs}#a_newest", f"{fs}#z_oldest",
                     f"{fs}/kid"]  # fmt: skip
    # libzfs sorts by name up to '@': `fs#bm` before `fs/kid` ('#' < '/')
    out = ok(b, "list", "-H", "-o", "name", "-t", "all", "-r", fs)
    assert out.split() == names
    # the engine's read without bookmarks is unchanged; bookmarks only when asked for
    out = ok(b, "get", "-H", "-o", "name", "-d", "1", "-t", "filesystem,volume,snapshot", "guid",
             fs)  # fmt: skip
    assert "#" not in out
    out = ok(b, "list", "-H", "-o", "name", "-t", "bookmark", "-s", "createtxg", fs)
    assert out.split() == [f"{fs}#z_oldest", f"{fs}#a_newest"]


def test_bookmark_refusals(b: ZfsBackend) -> None:
    fs = source(b)
    other = f"{b.base}/other"
    ok(b, "create", other)
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#b1")
    assert_fails(b.zfs("bookmark", f"{fs}@s1", f"{fs}#b1"),
                 f"cannot create bookmark '{fs}#b1': bookmark exists")  # fmt: skip
    assert_fails(b.zfs("bookmark", f"{fs}@nope", f"{fs}#b2"),
                 f"cannot open '{fs}@nope': dataset does not exist", "usage:", code=2)  # fmt: skip
    assert_fails(b.zfs("bookmark", f"{fs}#nope", f"{fs}#b2"),
                 f"cannot open '{fs}#nope': no such pool or dataset", code=2)  # fmt: skip
    assert_fails(b.zfs("bookmark", f"{fs}@s1", f"{fs}@b2"),
                 f"invalid bookmark name '{fs}@b2': must contain a '#'", code=2)  # fmt: skip
    assert_fails(b.zfs("bookmark", fs, f"{fs}#b2"),
                 f"invalid source name '{fs}': must contain a '@' or '#'", code=2)  # fmt: skip
    assert_fails(b.zfs("bookmark", f"{fs}@s1", f"{other}#b2"),
                 f"cannot create bookmark '{other}#b2': source is not an ancestor of the new "
                 "bookmark's dataset")  # fmt: skip
    assert_fails(b.zfs("bookmark", f"{fs}@s1", f"{b.base}/nofs#b2"),
                 f"cannot create bookmark '{b.base}/nofs#b2': dataset does not exist")  # fmt: skip
    for bad in ("b%x", "a@b", "a#b", ""):
        assert_fails(b.zfs("bookmark", f"{fs}@s1", f"{fs}#{bad}"),
                     f"cannot create bookmark '{fs}#{bad}': invalid argument")  # fmt: skip
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#with:colons.and-dash_ok")


def test_a_bookmark_is_not_a_snapshot_or_a_filesystem(b: ZfsBackend) -> None:
    fs = source(b)
    bm = f"{fs}#b1"
    ok(b, "bookmark", f"{fs}@s1", bm)
    not_here = f"cannot open '{bm}': bookmark delimiter '#' is not expected here"
    assert_fails(b.zfs("set", "zrep:x=1", bm), not_here)
    assert_fails(b.zfs("inherit", "zrep:x", bm), not_here)
    assert_fails(b.zfs("rename", bm, f"{fs}#b2"), not_here)
    assert_fails(b.zfs("list", bm), not_here)  # the default types have no bookmark
    assert_fails(b.zfs("send", bm), not_here)  # never a full-send source
    assert_fails(b.zfs("hold", "t", bm), f"'{bm}' is not a snapshot")
    assert_fails(b.zfs("release", "t", bm), f"'{bm}' is not a snapshot")
    assert_fails(b.zfs("holds", bm), f"'{bm}' is not a snapshot", "no datasets available")
    assert_fails(b.zfs("list", "-t", "bookmark", f"{fs}@s1"),
                 f"cannot open '{fs}@s1': snapshot delimiter '@' is not expected here")  # fmt: skip
    assert_fails(b.zfs("get", "guid", f"{fs}#nope"),
                 f"cannot open '{fs}#nope': no such pool or dataset")  # fmt: skip
    assert ok(b, "list", "-H", "-o", "name", "-t", "bookmark", bm).strip() == bm


def test_destroy_bookmark_and_what_destroying_the_snapshot_leaves(b: ZfsBackend) -> None:
    fs = source(b)
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#b1")
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#b2")
    assert_fails(b.zfs("destroy", f"{fs}#nope"), f"bookmark '{fs}#nope' does not exist.")
    assert_fails(b.zfs("destroy", "-n", f"{fs}#b2"), "dryrun is not supported with bookmark",
                 code=255)  # fmt: skip
    assert_fails(b.zfs("destroy", "-r", f"{fs}#b2"), "recursive is not supported with bookmark",
                 code=255)  # fmt: skip
    ok(b, "destroy", f"{fs}#b2")
    assert not exists(b, f"{fs}#b2")
    ok(b, "destroy", f"{fs}@s1")  # a bookmark does not hold its snapshot
    assert exists(b, f"{fs}#b1")
    assert get(b, "guid", f"{fs}#b1") != ""
    # a filesystem whose only dependents are bookmarks is destroyed without -r
    ok(b, "destroy", f"{fs}@s2")
    ok(b, "destroy", fs)
    assert not exists(b, fs)


def test_incremental_from_a_bookmark_when_the_base_snapshot_is_gone(b: ZfsBackend) -> None:
    fs = source(b, 1)
    write_file(b, fs, "big.bin", os.urandom(50000))
    ok(b, "snapshot", f"{fs}@s2")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{fs}@s2", f"-u {dst}").check()
    ok(b, "bookmark", f"{fs}@s2", f"{fs}#cursor")
    ok(b, "destroy", f"{fs}@s2")  # the base snapshot goes (by hand, by another tool...)
    write_file(b, fs, "f3", b"after the base went\n")
    ok(b, "snapshot", f"{fs}@s3")
    assert_fails(send_recv(b, f"-i @s2 {fs}@s3", dst), f"cannot open '{fs}@s2'")
    out = b.sh(f"zfs send -nvP -i '#cursor' {fs}@s3").check().stdout
    kind, frm, to, size = out.splitlines()[0].split("\t")
    assert (kind, frm, to) == ("incremental", f"{fs}#cursor", f"{fs}@s3") and int(size) > 0
    send_recv(b, f"-i {fs}#cursor {fs}@s3", f"-u {dst}").check()
    assert snapshots(b, dst) == ["s2", "s3"]
    assert guid(b, f"{dst}@s3") == guid(b, f"{fs}@s3")
    ok(b, "mount", dst)
    assert tree(b, dst) == tree(b, fs)


def test_bookmark_send_refusals(b: ZfsBackend) -> None:
    fs = source(b, 3)
    other = f"{b.base}/other"
    ok(b, "create", other)
    ok(b, "snapshot", f"{other}@o1")
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#b1")
    ok(b, "bookmark", f"{fs}@s3", f"{fs}#b3")
    multiple = "Error: multiple snapshots cannot be sent from a bookmark."
    assert_fails(b.sh(f"zfs send -I {fs}#b1 {fs}@s3 | cat"), multiple, code=0)
    assert_fails(b.zfs("send", "-nvP", "-I", "#b1", f"{fs}@s3"), multiple)
    assert_fails(b.zfs("send", "-nvP", "-R", "-i", "#b1", f"{fs}@s3"), multiple)
    # a base that is not older than the snapshot, or of another filesystem: EXDEV; a missing
    # bookmark: ESRCH. The size estimate (-v) finds it first: strerror() under -P.
    for frm, to, errno_text, own in [
        (f"{fs}#b3", f"{fs}@s2", "Invalid cross-device link",
         "not an earlier snapshot from the same fs"),
        (f"{fs}#b3", f"{fs}@s3", "Invalid cross-device link",
         "not an earlier snapshot from the same fs"),
        (f"{fs}#b1", f"{other}@o1", "Invalid cross-device link",
         "not an earlier snapshot from the same fs"),
        (f"{fs}#nope", f"{fs}@s2", "No such process", f"incremental source ({fs}#nope) does not "
         "exist"),
    ]:  # fmt: skip
        res = b.zfs("send", "-nvP", "-i", frm, to)
        assert_fails(res, f"warning: cannot send '{to}': {errno_text}")
        # without -v the send itself refuses, in libzfs's words
        res = b.sh(f"zfs send -i {frm} {to} | wc -c")
        assert_fails(res, f"warning: cannot send '{to}': {own}", code=0)
        assert res.stdout.strip() == "0"


def test_bookmark_base_when_the_destination_has_a_newer_snapshot(b: ZfsBackend) -> None:
    fs = source(b, 2)
    dst = f"{b.base2}/dst"
    send_recv(b, f"{fs}@s1", f"-u {dst}").check()
    send_recv(b, f"-i @s1 {fs}@s2", f"-u {dst}").check()
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#b1")
    ok(b, "destroy", f"{fs}@s1")
    write_file(b, fs, "f3", b"3\n")
    ok(b, "snapshot", f"{fs}@s3")
    # the destination's newest (s2, with changes) is not the bookmark's snapshot
    assert_fails(send_recv(b, f"-i {fs}#b1 {fs}@s3", f"-u {dst}"),
                 f"cannot receive incremental stream: destination {dst} has been modified "
                 "since most recent snapshot")  # fmt: skip
    send_recv(b, f"-i {fs}#b1 {fs}@s3", f"-u -F {dst}").check()
    assert snapshots(b, dst) == ["s1", "s3"]
    # a destination without the bookmark's snapshot
    fresh = f"{b.base2}/fresh"
    send_recv(b, f"{fs}@s2", f"-u {fresh}").check()
    assert_fails(send_recv(b, f"-i {fs}#b1 {fs}@s3", f"-u {fresh}"),
                 f"cannot receive incremental stream: most recent snapshot of {fresh} does not "
                 "match incremental source")  # fmt: skip


def test_rollback_destroys_newer_bookmarks_too(b: ZfsBackend) -> None:
    fs = source(b, 2)
    ok(b, "bookmark", f"{fs}@s2", f"{fs}#newer")
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#same")
    res = b.zfs("rollback", f"{fs}@s1")
    assert_fails(
        res,
        f"cannot rollback to '{fs}@s1': more recent snapshots or bookmarks exist",
        "use '-r' to force deletion of the following snapshots and bookmarks:",
    )
    assert res.stderr.splitlines()[-2:] == [f"{fs}@s2", f"{fs}#newer"]
    ok(b, "rollback", "-r", f"{fs}@s1")
    assert not exists(b, f"{fs}#newer")
    assert exists(b, f"{fs}#same")
    # a bookmark alone (its snapshot gone) also blocks a plain rollback
    ok(b, "snapshot", f"{fs}@s2")
    ok(b, "bookmark", f"{fs}@s2", f"{fs}#alone")
    ok(b, "destroy", f"{fs}@s2")
    assert_fails(b.zfs("rollback", f"{fs}@s1"), "more recent snapshots or bookmarks exist",
                 f"{fs}#alone")  # fmt: skip


def test_resume_an_incremental_from_a_bookmark(b: ZfsBackend) -> None:
    fs = source(b, 1)
    dst = f"{b.base2}/dst"
    send_recv(b, f"{fs}@s1", f"-u {dst}").check()
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#cursor")
    ok(b, "destroy", f"{fs}@s1")
    write_file(b, fs, "big.bin", os.urandom(3 << 20))
    ok(b, "snapshot", f"{fs}@s2")
    res = b.sh(f"zfs send -i {fs}#cursor {fs}@s2 | head -c 1000000 | zfs recv -s -u {dst}")
    assert_fails(res, "Partially received snapshot is saved.")
    token = get(b, "receive_resume_token", dst)
    assert token.startswith("1-")
    send_recv(b, f"-t {token}", f"-s -u {dst}").check()
    assert snapshots(b, dst) == ["s1", "s2"]
    assert guid(b, f"{dst}@s2") == guid(b, f"{fs}@s2")
