"""Datasets: create, destroy, snapshot, rename, rollback, holds, errors and exit codes."""

from __future__ import annotations

import re

from tests.harness.zfs_backend import (
    ZfsBackend,
    assert_fails,
    exists,
    get,
    guid,
    ok,
    read_file,
    sh_ok,
    snapshots,
    write_file,
    zfs_version,
)


def test_missing_dataset_is_reported_with_exit_1(b: ZfsBackend) -> None:
    res = b.zfs("list", f"{b.base}/nope")
    assert_fails(res, f"cannot open '{b.base}/nope': dataset does not exist")
    res = b.zfs("get", "all", f"{b.base}/nope@s")
    assert_fails(res, f"cannot open '{b.base}/nope@s': dataset does not exist")


def test_unknown_flag_is_a_usage_error_with_exit_2(b: ZfsBackend) -> None:
    res = b.zfs("list", "-Q")
    assert res.returncode == 2
    assert "invalid option 'Q'" in res.stderr
    assert "usage:" in res.stderr
    res = b.zfs("frobnicate")
    assert res.returncode == 2
    assert "unrecognized command 'frobnicate'" in res.stderr
    # the usage text ends with the permission line on 2.1; 2.2 added a `zfs help` line
    last = res.stderr.rstrip("\n").splitlines()[-1]
    if zfs_version(b) >= (2, 2, 0):
        assert last == "For further help on a command or topic, run: zfs help [<topic>]"
    else:
        assert last == "For the delegated permission list, run: zfs allow|unallow"


def test_bare_zfs_prints_usage_listing_receive_flags(b: ZfsBackend) -> None:
    res = b.zfs()
    assert res.returncode == 2
    # zrep detects features by grepping this text
    assert "receive [-vMnsFhu]" in res.stderr
    assert "-o <property>=<value>" in res.stderr
    assert "-x <property>" in res.stderr
    assert "create [-Pnpuv] [-o property=value]" in res.stderr


def test_create_refuses_existing_and_missing_parent(b: ZfsBackend) -> None:
    fs = f"{b.base}/a"
    ok(b, "create", fs)
    assert_fails(b.zfs("create", fs), f"cannot create '{fs}': dataset already exists")
    assert_fails(b.zfs("create", f"{b.base}/x/y"), "parent does not exist")
    ok(b, "create", "-p", f"{b.base}/x/y")
    assert exists(b, f"{b.base}/x")
    assert exists(b, f"{b.base}/x/y")
    ok(b, "create", "-p", f"{b.base}/x/y")  # -p tolerates existing


def test_create_with_properties(b: ZfsBackend) -> None:
    fs = f"{b.base}/p"
    ok(b, "create", "-o", "readonly=on", "-o", "zrepq:tag=blue", fs)
    assert get(b, "readonly", fs) == "on"
    assert get(b, "zrepq:tag", fs) == "blue"
    assert_fails(b.zfs("create", "-o", "nosuchprop=1", f"{b.base}/q"), "invalid property")
    assert not exists(b, f"{b.base}/q")


def test_filesystem_guids_differ(b: ZfsBackend) -> None:
    ok(b, "create", f"{b.base}/g1")
    ok(b, "create", f"{b.base}/g2")
    assert guid(b, f"{b.base}/g1") != guid(b, f"{b.base}/g2")


def test_destroy_with_snapshots_needs_r_and_lists_them(b: ZfsBackend) -> None:
    fs = f"{b.base}/d"
    ok(b, "create", fs)
    ok(b, "create", f"{fs}/child")
    ok(b, "snapshot", f"{fs}@s1")
    res = b.zfs("destroy", fs)
    assert_fails(res, f"cannot destroy '{fs}': filesystem has children", "use '-r' to destroy")
    assert f"{fs}@s1" in res.stderr
    assert f"{fs}/child" in res.stderr
    assert exists(b, fs)
    ok(b, "destroy", "-r", fs)
    assert not exists(b, fs)
    assert not exists(b, f"{fs}/child")


def test_destroy_missing_snapshot(b: ZfsBackend) -> None:
    fs = f"{b.base}/d"
    ok(b, "create", fs)
    res = b.zfs("destroy", f"{fs}@nope")
    assert_fails(res, "could not find any snapshots to destroy; check snapshot names.")


def test_held_snapshot_cannot_be_destroyed(b: ZfsBackend) -> None:
    fs = f"{b.base}/h"
    ok(b, "create", fs)
    ok(b, "snapshot", f"{fs}@s1")
    ok(b, "hold", "keep", f"{fs}@s1")
    res = b.zfs("destroy", f"{fs}@s1")
    # 2.1 says "dataset is busy"; Debian's 2.3.2 already says "it's being held. Run 'zfs
    # holds -r ...' to see holders." (2.3.0/2.3.1 not checked)
    if zfs_version(b) >= (2, 3, 2):
        assert_fails(res, f"cannot destroy snapshot {fs}@s1: it's being held.")
    else:
        assert_fails(res, f"cannot destroy snapshot {fs}@s1: dataset is busy")
    assert exists(b, f"{fs}@s1")
    assert get(b, "userrefs", f"{fs}@s1") == "1"
    ok(b, "release", "keep", f"{fs}@s1")
    ok(b, "destroy", f"{fs}@s1")
    assert not exists(b, f"{fs}@s1")


def test_hold_release_and_holds_listing(b: ZfsBackend) -> None:
    fs = f"{b.base}/h"
    ok(b, "create", fs)
    ok(b, "create", f"{fs}/kid")
    ok(b, "snapshot", "-r", f"{fs}@s1")
    ok(b, "hold", "-r", "t1", f"{fs}@s1")
    assert_fails(b.zfs("hold", "t1", f"{fs}@s1"), "tag already exists on this dataset")
    out = ok(b, "holds", "-H", "-r", f"{fs}@s1")
    rows = [line.split("\t") for line in out.splitlines()]
    assert sorted((r[0], r[1]) for r in rows) == [(f"{fs}/kid@s1", "t1"), (f"{fs}@s1", "t1")]
    out = ok(b, "holds", f"{fs}@s1")
    assert out.splitlines()[0].split() == ["NAME", "TAG", "TIMESTAMP"]
    # `holds` has its own time format: "%a %b %e %H:%M %Y" (zero-padded hour)
    stamp = out.splitlines()[1].split(None, 2)[2]
    assert re.fullmatch(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d \d{4}", stamp), stamp
    if zfs_version(b) >= (2, 2, 0):
        when = int(ok(b, "holds", "-H", "-p", f"{fs}@s1").split("\t")[2])
        assert stamp == sh_ok(b, f"date -d @{when} '+%a %b %e %H:%M %Y'").rstrip("\n")
    else:  # -p came with 2.2
        assert_fails(b.zfs("holds", "-p", f"{fs}@s1"), "invalid option 'p'", code=2)
    assert_fails(b.zfs("release", "nope", f"{fs}@s1"), "no such tag on this dataset")
    assert_fails(b.zfs("hold", "t", f"{fs}@missing"), "cannot hold snapshot", "does not exist")
    ok(b, "release", "-r", "t1", f"{fs}@s1")
    assert ok(b, "holds", "-H", "-r", f"{fs}@s1") == ""


def test_release_of_several_snapshots_goes_on_past_each_failure(b: ZfsBackend) -> None:
    """zrepq releases its stale holds with one `zfs release TAG S1 S2 ...`: OpenZFS releases
    every one it can, prints one line per snapshot it cannot (no such tag, gone) and exits 1."""
    fs = f"{b.base}/rel"
    ok(b, "create", fs)
    for s in ("s1", "s2", "s3"):
        ok(b, "snapshot", f"{fs}@{s}")
    ok(b, "hold", "t", f"{fs}@s1")
    ok(b, "hold", "t", f"{fs}@s3")
    ok(b, "hold", "other", f"{fs}@s3")
    res = b.zfs("release", "t", f"{fs}@s1", f"{fs}@s2", f"{fs}@gone", f"{fs}@s3")
    assert res.returncode == 1, res
    lines = sorted(ln for ln in res.stderr.splitlines() if ln.strip())
    assert lines == [
        f"cannot release hold from snapshot '{fs}@gone': dataset does not exist",
        f"cannot release hold from snapshot '{fs}@s2': no such tag on this dataset",
    ], res.stderr
    assert [get(b, "userrefs", f"{fs}@{s}") for s in ("s1", "s2", "s3")] == ["0", "0", "1"]
    assert ok(b, "holds", "-H", f"{fs}@s3").split("\t")[1] == "other"


def test_snapshot_already_exists(b: ZfsBackend) -> None:
    fs = f"{b.base}/s"
    ok(b, "create", fs)
    ok(b, "snapshot", f"{fs}@s1")
    res = b.zfs("snapshot", f"{fs}@s1")
    assert_fails(res, f"cannot create snapshot '{fs}@s1': dataset already exists")


def test_snapshot_of_several_is_atomic(b: ZfsBackend) -> None:
    fs1, fs2 = f"{b.base}/s1", f"{b.base}/s2"
    ok(b, "create", fs1)
    ok(b, "create", fs2)
    ok(b, "snapshot", f"{fs2}@x")
    res = b.zfs("snapshot", f"{fs1}@x", f"{fs2}@x")
    assert_fails(res, "dataset already exists", "no snapshots were created")
    assert not exists(b, f"{fs1}@x")


def test_snapshot_r_covers_descendants_in_one_txg(b: ZfsBackend) -> None:
    fs = f"{b.base}/r"
    ok(b, "create", "-p", f"{fs}/a/b")
    ok(b, "snapshot", "-r", f"{fs}@now")
    names = [f"{fs}@now", f"{fs}/a@now", f"{fs}/a/b@now"]
    txgs = {get(b, "createtxg", n) for n in names}
    assert len(txgs) == 1


def test_snapshot_of_missing_filesystem_is_a_usage_error(b: ZfsBackend) -> None:
    res = b.zfs("snapshot", f"{b.base}/nope@s")
    assert res.returncode == 2
    assert f"cannot open '{b.base}/nope': dataset does not exist" in res.stderr


def test_creation_orders_snapshots_within_one_second(b: ZfsBackend) -> None:
    fs = f"{b.base}/o"
    ok(b, "create", fs)
    for i in range(5):
        ok(b, "snapshot", f"{fs}@s{i}")
    assert snapshots(b, fs) == [f"s{i}" for i in range(5)]
    txgs = [int(get(b, "createtxg", f"{fs}@s{i}")) for i in range(5)]
    assert txgs == sorted(txgs) and len(set(txgs)) == 5
    creations = [int(get(b, "creation", f"{fs}@s{i}")) for i in range(5)]
    assert creations == sorted(creations)
    # default list order is by name, then snapshots by createtxg
    ok(b, "snapshot", f"{fs}@a-late")
    out = ok(b, "list", "-H", "-o", "name", "-t", "snapshot", "-r", fs).split()
    assert out[-1] == f"{fs}@a-late"


def test_snapshot_guids_are_unique_64bit(b: ZfsBackend) -> None:
    fs = f"{b.base}/g"
    ok(b, "create", fs)
    ok(b, "snapshot", f"{fs}@a")
    ok(b, "snapshot", f"{fs}@b")
    ga, gb = guid(b, f"{fs}@a"), guid(b, f"{fs}@b")
    assert ga != gb
    assert 0 < ga < 2**64 and 0 < gb < 2**64


def test_rename_snapshot_keeps_guid_full_and_short_form(b: ZfsBackend) -> None:
    fs = f"{b.base}/rn"
    ok(b, "create", fs)
    ok(b, "snapshot", f"{fs}@a")
    g = guid(b, f"{fs}@a")
    ok(b, "rename", f"{fs}@a", f"{fs}@b")
    assert guid(b, f"{fs}@b") == g
    ok(b, "rename", f"{fs}@b", "c")
    assert guid(b, f"{fs}@c") == g
    ok(b, "rename", f"{fs}@c", "@d")
    assert guid(b, f"{fs}@d") == g
    assert not exists(b, f"{fs}@a")
    ok(b, "snapshot", f"{fs}@e")
    assert_fails(b.zfs("rename", f"{fs}@d", f"{fs}@e"), "dataset already exists")
    ok(b, "create", f"{b.base}/other")
    res = b.zfs("rename", f"{fs}@d", f"{b.base}/other@d")
    assert_fails(res, "snapshots must be part of same dataset")


def test_rename_filesystem_keeps_guid_and_content(b: ZfsBackend) -> None:
    fs = f"{b.base}/old"
    ok(b, "create", fs)
    write_file(b, fs, "f.txt", b"content\n")
    ok(b, "snapshot", f"{fs}@s")
    g, sg = guid(b, fs), guid(b, f"{fs}@s")
    ok(b, "rename", fs, f"{b.base}/new")
    assert not exists(b, fs)
    assert guid(b, f"{b.base}/new") == g
    assert guid(b, f"{b.base}/new@s") == sg
    assert read_file(b, f"{b.base}/new", "f.txt") == b"content\n"
    assert_fails(
        b.zfs("rename", f"{b.base}/new", f"{b.base2}/new"), "datasets must be within same pool"
    )


def test_rollback_restores_content(b: ZfsBackend) -> None:
    fs = f"{b.base}/rb"
    ok(b, "create", fs)
    write_file(b, fs, "keep.txt", b"v1\n")
    ok(b, "snapshot", f"{fs}@s1")
    write_file(b, fs, "keep.txt", b"v2 changed\n")
    write_file(b, fs, "new.txt", b"new\n")
    ok(b, "rollback", f"{fs}@s1")
    assert read_file(b, fs, "keep.txt") == b"v1\n"
    assert b.sh(f'test -e "$(zfs get -H -o value mountpoint {fs})/new.txt"').returncode == 1


def test_rollback_needs_r_when_newer_snapshots_exist(b: ZfsBackend) -> None:
    fs = f"{b.base}/rb"
    ok(b, "create", fs)
    write_file(b, fs, "f", b"1")
    ok(b, "snapshot", f"{fs}@s1")
    write_file(b, fs, "f", b"2")
    ok(b, "snapshot", f"{fs}@s2")
    ok(b, "snapshot", f"{fs}@s3")
    res = b.zfs("rollback", f"{fs}@s1")
    assert_fails(
        res,
        f"cannot rollback to '{fs}@s1': more recent snapshots or bookmarks exist",
        "use '-r' to force deletion of the following snapshots and bookmarks:",
        f"{fs}@s2",
        f"{fs}@s3",
    )
    assert snapshots(b, fs) == ["s1", "s2", "s3"]
    ok(b, "rollback", "-r", f"{fs}@s1")
    assert snapshots(b, fs) == ["s1"]
    assert read_file(b, fs, "f") == b"1"


def test_rollback_refused_when_newer_snapshot_is_held(b: ZfsBackend) -> None:
    fs = f"{b.base}/rb"
    ok(b, "create", fs)
    ok(b, "snapshot", f"{fs}@s1")
    ok(b, "snapshot", f"{fs}@s2")
    ok(b, "hold", "pin", f"{fs}@s2")
    res = b.zfs("rollback", "-r", f"{fs}@s1")
    # rollback destroys the newer snapshots one by one: its wording, not destroy's
    assert_fails(res, f"cannot destroy '{fs}@s2': dataset is busy")
    assert "s2" in snapshots(b, fs)


def test_diff_reports_changes(b: ZfsBackend) -> None:
    fs = f"{b.base}/df"
    ok(b, "create", fs)
    write_file(b, fs, "mod.txt", b"a")
    write_file(b, fs, "gone.txt", b"b")
    ok(b, "snapshot", f"{fs}@s1")
    write_file(b, fs, "mod.txt", b"changed")
    write_file(b, fs, "added.txt", b"c")
    b.sh(f'rm "$(zfs get -H -o value mountpoint {fs})/gone.txt"').check()
    out = ok(b, "diff", f"{fs}@s1", fs)
    lines = {tuple(line.split("\t")) for line in out.splitlines()}
    names = {(kind, path.rsplit("/", 1)[-1]) for kind, path in lines}
    assert ("M", "mod.txt") in names
    assert ("+", "added.txt") in names
    assert ("-", "gone.txt") in names
    ok(b, "snapshot", f"{fs}@s2")
    assert ok(b, "diff", f"{fs}@s2", fs) == ""


def test_mount_and_unmount_flip_mounted(b: ZfsBackend) -> None:
    fs = f"{b.base}/m"
    ok(b, "create", fs)
    assert get(b, "mounted", fs) == "yes"
    ok(b, "unmount", fs)
    assert get(b, "mounted", fs) == "no"
    assert_fails(b.zfs("unmount", fs), "not currently mounted")
    ok(b, "mount", fs)
    assert get(b, "mounted", fs) == "yes"
    assert_fails(b.zfs("mount", fs), "filesystem already mounted")


def test_version_reports_userland_and_kmod(b: ZfsBackend) -> None:
    out = ok(b, "version").splitlines()
    assert out[0].startswith("zfs-2.")
    assert out[1].startswith("zfs-kmod-2.")
