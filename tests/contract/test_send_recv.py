"""zfs send | zfs recv: what arrives, and every refusal zrep relies on."""

from __future__ import annotations

import os

import pytest

from tests.harness.zfs_backend import (
    ZfsBackend,
    ZfsResult,
    assert_fails,
    exists,
    get,
    guid,
    ok,
    read_file,
    remove,
    scratch_pool,
    send_recv,
    sh_ok,
    snapshots,
    tree,
    write_file,
)


def make_source(b: ZfsBackend, name: str = "src") -> str:
    fs = f"{b.base}/{name}"
    ok(b, "create", fs)
    write_file(b, fs, "top.txt", b"top level\n")
    write_file(b, fs, "dir/nested.bin", os.urandom(70000))
    write_file(b, fs, "dir/deeper/script.sh", b"#!/bin/sh\necho hi\n", mode="755")
    write_file(b, fs, "empty", b"")
    sh_ok(b, f"cd \"$(zfs get -H -o value mountpoint {fs})\" && mkdir emptydir && "
             "ln -s top.txt link")  # fmt: skip
    return fs


def test_full_receive_is_byte_identical_and_keeps_snapshot_guid(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    assert tree(b, dst) == tree(b, src)
    assert guid(b, f"{dst}@s1") == guid(b, f"{src}@s1")
    assert guid(b, dst) != guid(b, src)
    assert snapshots(b, dst) == ["s1"]
    assert get(b, "type", dst) == "filesystem"


def test_received_snapshot_keeps_creation_time(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    send_recv(b, f"{src}@s1", f"{b.base2}/dst").check()
    assert get(b, "creation", f"{b.base2}/dst@s1") == get(b, "creation", f"{src}@s1")


def test_incremental_carries_modified_added_and_deleted_files(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    # readonly, as zrep receives: reading a writable dst below would modify it (atime)
    send_recv(b, f"{src}@s1", f"-o readonly=on {dst}").check()
    write_file(b, src, "top.txt", b"top level, modified\n")
    write_file(b, src, "added/new.bin", os.urandom(5000))
    remove(b, src, "dir/nested.bin")
    remove(b, src, "emptydir")
    sh_ok(b, f'chmod 600 "$(zfs get -H -o value mountpoint {src})/empty"')
    ok(b, "snapshot", f"{src}@s2")
    send_recv(b, f"-i @s1 {src}@s2", dst).check()
    assert tree(b, dst) == tree(b, src)
    assert read_file(b, dst, "top.txt") == b"top level, modified\n"
    assert snapshots(b, dst) == ["s1", "s2"]
    assert guid(b, f"{dst}@s2") == guid(b, f"{src}@s2")
    # the full-name form of -i works too
    write_file(b, src, "top.txt", b"third\n")
    ok(b, "snapshot", f"{src}@s3")
    send_recv(b, f"-i {src}@s2 {src}@s3", dst).check()
    assert read_file(b, dst, "top.txt") == b"third\n"


def test_reading_a_writable_received_filesystem_modifies_it(b: ZfsBackend) -> None:
    """Found on OpenZFS 2.1 and 2.3: the first read of a file (relatime: atime not newer
    than mtime) writes its atime, so the next incremental without -F is refused. A standby
    received readonly=on (zrep's way) or with atime=off stays unmodified when read."""
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    rw, ro, noatime = f"{b.base2}/rw", f"{b.base2}/ro", f"{b.base2}/noatime"
    send_recv(b, f"{src}@s1", rw).check()
    send_recv(b, f"{src}@s1", f"-o readonly=on {ro}").check()
    send_recv(b, f"{src}@s1", f"-o atime=off {noatime}").check()
    write_file(b, src, "top.txt", b"changed\n")
    ok(b, "snapshot", f"{src}@s2")
    for fs in (rw, ro, noatime):
        assert read_file(b, fs, "top.txt") == b"top level\n"
    assert_fails(send_recv(b, f"-i @s1 {src}@s2", rw), f"destination {rw} has been modified")
    for fs in (ro, noatime):
        send_recv(b, f"-i @s1 {src}@s2", fs).check()
        assert read_file(b, fs, "top.txt") == b"changed\n"
    # -F rolls the read back first
    send_recv(b, f"-i @s1 {src}@s2", f"-F {rw}").check()
    assert snapshots(b, rw) == ["s1", "s2"]


def test_incremental_I_brings_intermediate_snapshots(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    for i in (2, 3, 4):
        write_file(b, src, f"f{i}", f"{i}\n".encode())
        ok(b, "snapshot", f"{src}@s{i}")
    send_recv(b, f"-I @s1 {src}@s4", dst).check()
    assert snapshots(b, dst) == ["s1", "s2", "s3", "s4"]
    for i in (2, 3, 4):
        assert guid(b, f"{dst}@s{i}") == guid(b, f"{src}@s{i}")
    assert tree(b, dst) == tree(b, src)


def test_incremental_i_skips_intermediate_snapshots(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    ok(b, "snapshot", f"{src}@s2")
    write_file(b, src, "x", b"x")
    ok(b, "snapshot", f"{src}@s3")
    send_recv(b, f"-i @s1 {src}@s3", dst).check()
    assert snapshots(b, dst) == ["s1", "s3"]


def test_incremental_across_early_and_late_snaps_with_stuff_in_the_middle(b: ZfsBackend) -> None:
    """The seed's to-do, at the ZFS level: base early, new late, and between them a foreign
    snapshot, a zrep snapshot renamed `_unsent` after a failed send, and another foreign one.
    -I carries every one of them under its current name and guid; -i only the end."""
    src = make_source(b)
    ok(b, "snapshot", f"{src}@zrep_000000")
    every, ends = f"{b.base2}/every", f"{b.base2}/ends"
    for dst in (every, ends):
        send_recv(b, f"{src}@zrep_000000", f"-o readonly=on {dst}").check()
    middle = ["hourly-1", "zrep_000001", "daily-1"]
    for i, name in enumerate([*middle, "zrep_000002"]):
        write_file(b, src, f"f{i}", f"{i}\n".encode())
        ok(b, "snapshot", f"{src}@{name}")
    ok(b, "rename", f"{src}@zrep_000001", f"{src}@zrep_000001_unsent")
    send_recv(b, f"-I @zrep_000000 {src}@zrep_000002", every).check()
    want = ["zrep_000000", "hourly-1", "zrep_000001_unsent", "daily-1", "zrep_000002"]
    assert snapshots(b, every) == want
    for name in want:
        assert guid(b, f"{every}@{name}") == guid(b, f"{src}@{name}")
    send_recv(b, f"-i @zrep_000000 {src}@zrep_000002", ends).check()
    assert snapshots(b, ends) == ["zrep_000000", "zrep_000002"]
    for dst in (every, ends):
        assert tree(b, dst) == tree(b, src)


def test_incremental_requires_latest_base(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    ok(b, "snapshot", f"{src}@s2")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    write_file(b, src, "x", b"x")
    ok(b, "snapshot", f"{src}@s3")
    # the destination does not have @s2
    res = send_recv(b, f"-i @s2 {src}@s3", dst)
    assert_fails(
        res,
        "cannot receive incremental stream: most recent snapshot of",
        f"{dst} does not match incremental source",
    )
    assert snapshots(b, dst) == ["s1"]


def test_incremental_from_older_base_refused_when_newer_snapshot_differs(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    write_file(b, src, "a", b"a")
    ok(b, "snapshot", f"{src}@s2")
    send_recv(b, f"-i @s1 {src}@s2", dst).check()
    write_file(b, src, "b", b"b")
    ok(b, "snapshot", f"{src}@s3")
    # dst has s1, s2; a stream from s1 (not the newest) is refused without -F
    res = send_recv(b, f"-i @s1 {src}@s3", dst)
    assert_fails(res, f"destination {dst} has been modified", "since most recent snapshot")
    # with -F the newer snapshot is destroyed and the stream applies
    send_recv(b, f"-i @s1 {src}@s3", f"-F {dst}").check()
    assert snapshots(b, dst) == ["s1", "s3"]
    assert tree(b, dst) == tree(b, src)


def test_recv_F_refuses_to_destroy_held_newer_snapshot(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    ok(b, "snapshot", f"{dst}@local")
    ok(b, "hold", "keep", f"{dst}@local")
    write_file(b, src, "n", b"n")
    ok(b, "snapshot", f"{src}@s2")
    res = send_recv(b, f"-i @s1 {src}@s2", f"-F {dst}")
    assert res.returncode == 1
    assert "dataset is busy" in res.stderr
    assert snapshots(b, dst) == ["s1", "local"]


def test_recv_refuses_modified_destination(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    write_file(b, dst, "stray.txt", b"written on the destination\n")
    write_file(b, src, "more", b"more")
    ok(b, "snapshot", f"{src}@s2")
    res = send_recv(b, f"-i @s1 {src}@s2", dst)
    assert_fails(
        res,
        "cannot receive incremental stream:",
        f"destination {dst} has been modified",
        "since most recent snapshot",
    )
    assert snapshots(b, dst) == ["s1"]
    assert read_file(b, dst, "stray.txt") == b"written on the destination\n"


def test_recv_F_rolls_back_modified_destination(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    write_file(b, dst, "stray.txt", b"x")
    write_file(b, dst, "top.txt", b"clobbered")
    write_file(b, src, "more", b"more")
    ok(b, "snapshot", f"{src}@s2")
    send_recv(b, f"-i @s1 {src}@s2", f"-F {dst}").check()
    assert tree(b, dst) == tree(b, src)
    assert "stray.txt" not in tree(b, dst)


def test_full_stream_into_existing_dataset_needs_F(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    ok(b, "create", dst)
    res = send_recv(b, f"{src}@s1", dst)
    assert_fails(
        res,
        f"cannot receive new filesystem stream: destination '{dst}' exists",
        "must specify -F to overwrite it",
    )
    send_recv(b, f"{src}@s1", f"-F {dst}").check()
    assert tree(b, dst) == tree(b, src)
    # with snapshots on the destination even -F refuses a full stream
    ok(b, "snapshot", f"{src}@s2")
    res = send_recv(b, f"{src}@s2", f"-F {dst}")
    assert_fails(res, "destination has snapshots", f"{dst}@s1", "must destroy them to overwrite it")


def test_incremental_into_missing_dataset(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    ok(b, "snapshot", f"{src}@s2")
    dst = f"{b.base2}/nothere"
    res = send_recv(b, f"-i @s1 {src}@s2", dst)
    assert_fails(res, f"cannot receive incremental stream: destination '{dst}' does not exist")
    assert not exists(b, dst)


def test_full_stream_into_missing_parent(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    res = send_recv(b, f"{src}@s1", f"{b.base2}/no/such")
    assert res.returncode == 1
    assert f"cannot open '{b.base2}/no': dataset does not exist" in res.stderr
    assert not exists(b, f"{b.base2}/no")


def test_existing_snapshot_name_is_refused(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    ok(b, "snapshot", f"{dst}@s2")  # same name, different snapshot
    ok(b, "snapshot", f"{src}@s2")
    res = send_recv(b, f"-i @s1 {src}@s2", dst)
    assert_fails(res, f"cannot restore to {dst}@s2: destination already exists")


def test_readonly_destination_still_receives(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", f"-o readonly=on {dst}").check()
    assert get(b, "readonly", dst) == "on"
    write_file(b, src, "new", b"new")
    ok(b, "snapshot", f"{src}@s2")
    send_recv(b, f"-i @s1 {src}@s2", dst).check()
    assert snapshots(b, dst) == ["s1", "s2"]
    assert read_file(b, dst, "new") == b"new"


def test_recv_into_explicit_snapshot_name(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    send_recv(b, f"{src}@s1", f"{b.base2}/dst@renamed").check()
    assert snapshots(b, f"{b.base2}/dst") == ["renamed"]
    assert guid(b, f"{b.base2}/dst@renamed") == guid(b, f"{src}@s1")


def test_recv_d_and_e_name_mapping(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    # -e: append the last component of the sent name
    send_recv(b, f"{src}@s1", f"-e {b.base2}").check()
    assert exists(b, f"{b.base2}/src@s1")
    # -d: append everything but the pool name (creating parents)
    ok(b, "create", f"{b.base2}/d")
    send_recv(b, f"{src}@s1", f"-d {b.base2}/d").check()
    tail = src.split("/", 1)[1]
    assert exists(b, f"{b.base2}/d/{tail}@s1")


def test_send_refuses_bad_incremental_source(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    ok(b, "snapshot", f"{src}@s2")
    res = b.sh(f"zfs send -i @s2 {src}@s1 > /dev/null")
    assert_fails(res, f"cannot send '{src}@s1': not an earlier snapshot from the same fs")
    res = b.sh(f"zfs send -i @nope {src}@s2 > /dev/null")
    assert_fails(res, f"cannot open '{src}@nope': dataset does not exist")
    res = b.sh(f"zfs send {src}@nope > /dev/null")
    assert_fails(res, f"cannot open '{src}@nope': dataset does not exist")
    res = b.sh(f"zfs send -I @nope {src}@s2 > /dev/null")
    assert_fails(res, f"cannot open '{src}@nope': dataset does not exist")
    ok(b, "create", f"{b.base}/other")
    ok(b, "snapshot", f"{b.base}/other@s1")
    res = b.sh(f"zfs send -I {b.base}/other@s1 {src}@s2 > /dev/null")
    assert_fails(res, "incremental source must be in same filesystem", code=2)


def test_send_refuses_a_terminal(b: ZfsBackend) -> None:
    if not b.sh("command -v script").ok:
        pytest.skip("needs script(1) from util-linux for a pseudo-terminal")
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    res = b.sh(f"script -qec 'zfs send {src}@s1' /dev/null")
    assert res.returncode == 1
    assert "Error: Stream can not be written to a terminal." in res.stdout + res.stderr
    # a dry run may go to a terminal
    res = b.sh(f"script -qec 'zfs send -nvP {src}@s1' /dev/null")
    assert res.returncode == 0


def test_send_nvP_output_format_and_size(b: ZfsBackend) -> None:
    src = make_source(b)
    write_file(b, src, "payload", os.urandom(1 << 20))
    ok(b, "snapshot", f"{src}@s1")
    res = b.zfs("send", "-nvP", f"{src}@s1")
    res.check()
    lines = res.stdout.splitlines()
    full = [ln for ln in lines if ln.startswith("full\t")]
    assert len(full) == 1
    _kind, name, size = full[0].split("\t")
    assert name == f"{src}@s1"
    assert f"size\t{size}" in lines
    actual = int(sh_ok(b, f"zfs send {src}@s1 | wc -c").strip())
    assert abs(actual - int(size)) <= max(actual // 10, 65536), (actual, size)
    # incremental with -i names the full from-snapshot; -I names it short, one line each
    write_file(b, src, "payload2", os.urandom(1 << 20))
    ok(b, "snapshot", f"{src}@s2")
    ok(b, "snapshot", f"{src}@s3")
    out = ok(b, "send", "-nvP", "-i", "@s1", f"{src}@s3").splitlines()
    inc = [ln.split("\t") for ln in out if ln.startswith("incremental\t")]
    assert [r[1:3] for r in inc] == [[f"{src}@s1", f"{src}@s3"]]
    out = ok(b, "send", "-nvP", "-I", "@s1", f"{src}@s3").splitlines()
    inc = [ln.split("\t") for ln in out if ln.startswith("incremental\t")]
    assert [r[1:3] for r in inc] == [["s1", f"{src}@s2"], ["s2", f"{src}@s3"]]
    total = [ln for ln in out if ln.startswith("size\t")]
    assert len(total) == 1
    assert int(total[0].split("\t")[1]) >= sum(int(r[3]) for r in inc) - 1024
    actual = int(sh_ok(b, f"zfs send -I @s1 {src}@s3 | wc -c").strip())
    est = int(total[0].split("\t")[1])
    assert abs(actual - est) <= max(actual // 10, 65536), (actual, est)


def test_send_vP_reports_header_and_progress_on_stderr(b: ZfsBackend) -> None:
    src = make_source(b)
    write_file(b, src, "payload", os.urandom(4 << 20))
    ok(b, "snapshot", f"{src}@s1")
    res = b.sh(
        f"zfs send -vP {src}@s1 2>/tmp/zfs-contract-err.$$ | (sleep 2.5; cat > /dev/null); "
        "cat /tmp/zfs-contract-err.$$ >&2; rm -f /tmp/zfs-contract-err.$$"
    )
    res.check()
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines[0].startswith(f"full\t{src}@s1\t")
    assert lines[1].startswith("size\t")
    progress = [ln for ln in lines[2:] if ln.count("\t") == 2]
    assert progress, res.stderr
    for ln in progress:
        clock, sent, name = ln.split("\t")
        assert len(clock) == 8 and clock[2] == clock[5] == ":"
        assert sent.isdigit()
        assert name == f"{src}@s1"


def test_cut_stream_fails_and_leaves_nothing_without_s(b: ZfsBackend) -> None:
    src = make_source(b)
    write_file(b, src, "payload", os.urandom(1 << 20))
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    res = b.sh(f"zfs send {src}@s1 | head -c 500000 | zfs recv {dst}")
    assert res.returncode == 1
    assert "cannot receive new filesystem stream:" in res.stderr
    assert "incomplete stream" in res.stderr or "checksum mismatch" in res.stderr
    assert not exists(b, dst)
    # a cut incremental leaves the destination as it was
    send_recv(b, f"{src}@s1", dst).check()
    write_file(b, src, "payload2", os.urandom(1 << 20))
    ok(b, "snapshot", f"{src}@s2")
    res = b.sh(f"zfs send -i @s1 {src}@s2 | head -c 400000 | zfs recv {dst}")
    assert res.returncode == 1
    assert snapshots(b, dst) == ["s1"]
    assert get(b, "receive_resume_token", dst) == "-"


def test_resume_token_after_cut_stream(b: ZfsBackend) -> None:
    src = make_source(b)
    write_file(b, src, "payload", os.urandom(2 << 20))
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    res = b.sh(f"zfs send {src}@s1 | head -c 1000000 | zfs recv -s {dst}")
    assert res.returncode == 1
    assert "Partially received snapshot is saved." in res.stderr
    assert "A resuming stream can be generated on the sending system by running:" in res.stderr
    # a partial initial receive creates the dataset holding only the resume token
    assert exists(b, dst)
    assert snapshots(b, dst) == []
    token = get(b, "receive_resume_token", dst)
    assert token.startswith("1-") and token.count("-") >= 3
    assert f"zfs send -t {token}" in res.stderr
    # the dry run of the resume names what it will send
    out = ok(b, "send", "-nvP", "-t", token)
    assert any(ln.startswith(f"full\t{src}@s1\t") for ln in out.splitlines())
    assert any(ln.startswith("size\t") for ln in out.splitlines())
    send_recv(b, f"-t {token}", f"-s {dst}").check()
    assert get(b, "receive_resume_token", dst) == "-"
    assert snapshots(b, dst) == ["s1"]
    assert guid(b, f"{dst}@s1") == guid(b, f"{src}@s1")
    assert tree(b, dst) == tree(b, src)


def test_resume_of_incremental_after_two_cuts(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    write_file(b, src, "p1", os.urandom(1 << 20))
    write_file(b, src, "p2", os.urandom(1 << 20))
    remove(b, src, "top.txt")
    ok(b, "snapshot", f"{src}@s2")
    res = b.sh(f"zfs send -i @s1 {src}@s2 | head -c 700000 | zfs recv -s {dst}")
    assert res.returncode == 1
    t1 = get(b, "receive_resume_token", dst)
    assert t1 != "-"
    assert snapshots(b, dst) == ["s1"]
    res = b.sh(f"zfs send -t {t1} | head -c 700000 | zfs recv -s {dst}")
    assert res.returncode == 1
    t2 = get(b, "receive_resume_token", dst)
    assert t2 not in ("-", t1)
    send_recv(b, f"-t {t2}", f"-s {dst}").check()
    assert snapshots(b, dst) == ["s1", "s2"]
    assert tree(b, dst) == tree(b, src)


def s1_received_s2_taken(b: ZfsBackend) -> tuple[str, str]:
    """A source with `@s1` received into `BASE2/dst`, and `@s2` (1 MiB more) not yet sent."""
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", dst).check()
    write_file(b, src, "p1", os.urandom(1 << 20))
    ok(b, "snapshot", f"{src}@s2")
    return src, dst


def test_partial_state_refuses_other_streams_and_recv_A_aborts(b: ZfsBackend) -> None:
    src, dst = s1_received_s2_taken(b)
    write_file(b, src, "p2", b"later")
    ok(b, "snapshot", f"{src}@s3")
    b.sh(f"zfs send -i @s1 {src}@s2 | head -c 300000 | zfs recv -s {dst}")
    assert get(b, "receive_resume_token", dst) != "-"
    res = send_recv(b, f"-i @s1 {src}@s3", dst)
    assert_fails(res, f'destination {dst} contains partially-complete state from "zfs receive -s".')
    ok(b, "receive", "-A", dst)
    assert get(b, "receive_resume_token", dst) == "-"
    assert snapshots(b, dst) == ["s1"]
    assert_fails(
        b.zfs("receive", "-A", dst),
        f"'{dst}' does not have any resumable receive state to abort",
    )
    send_recv(b, f"-i @s1 {src}@s3", dst).check()
    assert snapshots(b, dst) == ["s1", "s3"]


def test_resumable_receive_needs_feature_extensible_dataset(b: ZfsBackend) -> None:
    """zrepq receives with `-s` by default and falls back to a plain receive on a pool that
    refuses it: a pool without feature@extensible_dataset (`zpool create -d`) refuses `-s`
    at the start, with this message, for a full and an incremental stream; without `-s` the
    same streams are received."""
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    write_file(b, src, "more", os.urandom(50_000))
    ok(b, "snapshot", f"{src}@s2")
    with scratch_pool(b, "d", "-d") as old:
        dst = f"{old}/dst"
        refused = "pool must be upgraded to receive this stream."
        res = send_recv(b, f"{src}@s1", f"-s {dst}")
        assert_fails(res, f"cannot receive new filesystem stream: {refused}")
        assert not exists(b, dst)
        send_recv(b, f"{src}@s1", f"-u {dst}").check()
        res = send_recv(b, f"-I @s1 {src}@s2", f"-s {dst}")
        assert_fails(res, f"cannot receive incremental stream: {refused}")
        assert snapshots(b, dst) == ["s1"]
        send_recv(b, f"-I @s1 {src}@s2", dst).check()
        assert snapshots(b, dst) == ["s1", "s2"]
        assert guid(b, f"{dst}@s2") == guid(b, f"{src}@s2")


def test_recv_A_of_partial_initial_receive_removes_dataset(b: ZfsBackend) -> None:
    src = make_source(b)
    write_file(b, src, "payload", os.urandom(1 << 20))
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    b.sh(f"zfs send {src}@s1 | head -c 300000 | zfs recv -s {dst}")
    assert exists(b, dst)
    # a fresh full stream is refused while the partial dataset exists
    res = send_recv(b, f"{src}@s1", dst)
    assert_fails(res, f"destination '{dst}' exists", "must specify -F to overwrite it")
    ok(b, "receive", "-A", dst)
    assert not exists(b, dst)
    send_recv(b, f"{src}@s1", dst).check()
    assert tree(b, dst) == tree(b, src)


def test_replication_stream_carries_descendants_and_properties(b: ZfsBackend) -> None:
    top = f"{b.base}/tree"
    ok(b, "create", "-p", f"{top}/kid/grandkid")
    ok(b, "set", "zrepq:src-fs=" + top, top)
    ok(b, "set", "zrepq:kidprop=k", f"{top}/kid")
    write_file(b, f"{top}/kid", "k.txt", b"kid data\n")
    write_file(b, f"{top}/kid/grandkid", "g.txt", b"grandkid data\n")
    ok(b, "snapshot", "-r", f"{top}@r1")
    ok(b, "set", "zrepq:sent=111", f"{top}@r1")
    dst = f"{b.base2}/mirror"
    send_recv(b, f"-R {top}@r1", dst).check()
    assert exists(b, f"{dst}/kid/grandkid@r1")
    assert read_file(b, f"{dst}/kid/grandkid", "g.txt") == b"grandkid data\n"
    assert get_both(b, "zrepq:src-fs", dst) == (top, "received")
    assert get_both(b, "zrepq:kidprop", f"{dst}/kid") == ("k", "received")
    assert get_both(b, "zrepq:src-fs", f"{dst}/kid") == (top, f"inherited from {dst}")
    assert get_both(b, "zrepq:sent", f"{dst}@r1") == ("111", "received")
    assert guid(b, f"{dst}/kid@r1") == guid(b, f"{top}/kid@r1")
    # incremental replication with intermediates, a new child arriving in full
    ok(b, "create", f"{top}/newkid")
    write_file(b, f"{top}/newkid", "n.txt", b"new\n")
    ok(b, "snapshot", "-r", f"{top}@r2")
    write_file(b, f"{top}/kid", "k.txt", b"kid data v3\n")
    ok(b, "snapshot", "-r", f"{top}@r3")
    send_recv(b, f"-R -I @r1 {top}@r3", f"-F {dst}").check()
    assert snapshots(b, f"{dst}/kid") == ["r1", "r2", "r3"]
    assert snapshots(b, f"{dst}/newkid") == ["r2", "r3"]
    assert read_file(b, f"{dst}/kid", "k.txt") == b"kid data v3\n"
    assert read_file(b, f"{dst}/newkid", "n.txt") == b"new\n"


def test_replication_stream_into_snapshot_name_is_refused(b: ZfsBackend) -> None:
    top = f"{b.base}/tree"
    ok(b, "create", "-p", f"{top}/kid")
    ok(b, "snapshot", "-r", f"{top}@r1")
    res = send_recv(b, f"-R {top}@r1", f"{b.base2}/m@x")
    assert_fails(res, "cannot specify snapshot name for multi-snapshot stream")


def test_props_stream_p_carries_local_properties(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "set", "zrepq:master=yes", src)
    ok(b, "set", "readonly=on", src)
    ok(b, "snapshot", f"{src}@s1")
    plain, withp = f"{b.base2}/plain", f"{b.base2}/withp"
    send_recv(b, f"{src}@s1", plain).check()
    send_recv(b, f"-p {src}@s1", withp).check()
    assert get_both(b, "zrepq:master", plain) == ("-", "-")
    assert get_both(b, "zrepq:master", withp) == ("yes", "received")
    assert get_both(b, "readonly", withp) == ("on", "received")


def test_recv_n_changes_nothing_and_v_reports(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    res = send_recv(b, f"{src}@s1", f"-nv {dst}")
    res.check()
    assert f"would receive full stream of {src}@s1 into {dst}@s1" in res.stdout
    assert not exists(b, dst)
    res = send_recv(b, f"{src}@s1", f"-v {dst}")
    res.check()
    assert f"receiving full stream of {src}@s1 into {dst}@s1" in res.stdout


def test_recv_u_does_not_mount(b: ZfsBackend) -> None:
    src = make_source(b)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"{src}@s1", f"-u {dst}").check()
    assert get(b, "mounted", dst) == "no"
    ok(b, "mount", dst)
    assert get(b, "mounted", dst) == "yes"
    assert tree(b, dst) == tree(b, src)


def test_garbage_stream_is_rejected(b: ZfsBackend) -> None:
    res = b.sh(f"head -c 4096 /dev/urandom | zfs recv {b.base2}/junk")
    assert res.returncode == 1
    assert "cannot receive" in res.stderr
    assert not exists(b, f"{b.base2}/junk")
    res = b.sh(f"zfs recv {b.base2}/junk < /dev/null")
    assert_fails(res, "cannot receive: failed to read from stream")


def get_both(b: ZfsBackend, prop: str, ds: str) -> tuple[str, str]:
    out = ok(b, "get", "-H", "-o", "value,source", prop, ds).rstrip("\n")
    value, source = out.split("\t")
    return value, source


@pytest.mark.parametrize("first_s", [True, False], ids=["first-s", "first-plain"])
def test_a_receive_is_refused_while_another_writes_into_the_filesystem(
    b: ZfsBackend, first_s: bool
) -> None:
    """A killed worker's `zfs recv` may still be running when the task's re-run starts its
    own. OpenZFS refuses any other receive into that filesystem at its start, whatever its
    flags (the first owns `DST/%recv`); a first with `-s` shows its resume token already; the
    first lands."""
    src, dst = s1_received_s2_taken(b)
    out, gate, ready = (f"/tmp/zrepq-first-recv.{x}" for x in ("out", "gate", "ready"))
    sh_ok(  # the first receive gets 200 kB (more than a pipe holds), then the rest at the gate
        b,
        f"rm -f {gate} {ready}; (zfs send -i @s1 {src}@s2 | (head -c 200000; touch {ready}; "
        f"while [ ! -e {gate} ]; do sleep 0.1; done; cat) "
        f"| zfs recv {'-s' if first_s else ''} {dst}; echo rc=$?) >{out} 2>&1 </dev/null & "
        f"while [ ! -e {ready} ]; do sleep 0.1; done",
    )
    try:
        during = get(b, "receive_resume_token", dst)
        tries = _receives_meanwhile(b, src, dst, during, first_s)
    finally:
        sh_ok(b, f"touch {gate}")
    assert (during != "-") == first_s
    for what, res in tries.items():
        kind = what.split()[0]
        if first_s:
            assert_fails(
                res,
                f"cannot receive {kind} stream: destination {dst} contains partially-complete "
                'state from "zfs receive -s".',
            )
        else:
            assert_fails(res, f"cannot receive {kind} stream: dataset is busy")
    assert sh_ok(b, f"while ! grep -q rc= {out}; do sleep 0.2; done; cat {out}") == "rc=0\n"
    assert snapshots(b, dst) == ["s1", "s2"]
    assert get(b, "receive_resume_token", dst) == "-"
    assert tree(b, dst) == tree(b, src)


def _receives_meanwhile(
    b: ZfsBackend, src: str, dst: str, token: str, first_s: bool
) -> dict[str, ZfsResult]:
    """Other receives of the same snapshot into `dst`, and `token` in place all along."""
    tries = {
        "incremental": send_recv(b, f"-i @s1 {src}@s2", dst),
        "incremental -s": send_recv(b, f"-i @s1 {src}@s2", f"-s {dst}"),
    }
    if first_s:
        tries["resume"] = send_recv(b, f"-t {token}", f"-s {dst}")
    assert get(b, "receive_resume_token", dst) == token
    return tries
