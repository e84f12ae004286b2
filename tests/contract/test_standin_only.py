"""Stand-in only: behaviour of tests/standin itself, not of ZFS.

These use `standin_host` directly (not the `ZfsBackend`), so they never run against real
OpenZFS: the delay knob, the call log, concurrency of the state lock, the resume token shape
and streaming throughput.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.standin import StandinHost
from tests.harness.zfs_backend import UNPRIVILEGED, as_user


@pytest.fixture
def host(standin_host: Callable[..., StandinHost]) -> StandinHost:
    return standin_host("hosta")


def test_missing_root_is_a_clear_error(standin_bin, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ZFS_STANDIN_ROOT"}
    res = subprocess.run(
        [str(standin_bin / "zfs"), "list"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 1
    assert "ZFS_STANDIN_ROOT is not set" in res.stderr


def test_call_log_records_every_invocation(host: StandinHost) -> None:
    before = len(host.calls())
    host.zfs("create", "poola/x")
    host.zfs("list", "-H", "poola/nope", check=False)
    host.zpool("list", "-H", "-o", "name")
    calls = host.calls()[before:]
    assert [c["argv"] for c in calls] == [
        ["zfs", "create", "poola/x"],
        ["zfs", "list", "-H", "poola/nope"],
        ["zpool", "list", "-H", "-o", "name"],
    ]
    assert all(isinstance(c["pid"], int) and c["t"] > 0 for c in calls)
    assert host.zfs_calls("create") == [["zfs", "create", "poola/x"]]


def test_delay_env_is_slept_on_every_call(host: StandinHost) -> None:
    t0 = time.monotonic()
    host.zfs("list")
    fast = time.monotonic() - t0
    env = dict(host.env, ZFS_STANDIN_DELAY="0.4")
    t0 = time.monotonic()
    subprocess.run(["zfs", "list"], env=env, check=True, capture_output=True)
    subprocess.run(["zpool", "list"], env=env, check=True, capture_output=True)
    slow = time.monotonic() - t0
    assert slow >= 0.8
    assert slow - 2 * fast >= 0.7


def test_content_lives_in_the_mountpoint_directory(host: StandinHost) -> None:
    host.zfs("create", "poola/fs")
    mp = host.mountpoint("poola/fs")
    assert str(mp) == host.get("mountpoint", "poola/fs")
    assert mp == host.root / "mnt" / "poola" / "fs"
    (mp / "hello").write_text("hi")
    host.zfs("snapshot", "poola/fs@s1")
    (mp / "hello").write_text("changed")
    host.zfs("rollback", "poola/fs@s1")
    assert (mp / "hello").read_text() == "hi"
    # -o mountpoint= moves the content directory
    other = host.root / "elsewhere"
    host.zfs("create", "-o", f"mountpoint={other}", "poola/fs2")
    host.write("poola/fs2", "f", b"x")
    assert (other / "f").read_bytes() == b"x"
    host.zfs("set", f"mountpoint={host.root / 'moved'}", "poola/fs2")
    assert (host.root / "moved" / "f").read_bytes() == b"x"
    # unmount keeps the files where they are (documented)
    host.zfs("unmount", "poola/fs")
    assert (mp / "hello").read_text() == "hi"


def test_a_mountpoint_on_another_filesystem_gets_the_files_as_a_remount_would(
    host: StandinHost,
) -> None:
    # OpenZFS remounts the dataset at the new path, whatever filesystem that path is on; the
    # stand-in moves its content directory there, across devices too (here tmpfs).
    other_fs = Path(tempfile.mkdtemp(prefix="standin-mp-", dir="/dev/shm"))
    try:
        assert os.stat(other_fs).st_dev != os.stat(host.root).st_dev
        host.zfs("create", "poola/fs")
        host.zfs("create", "poola/fs/child")
        old = host.mountpoint("poola/fs")
        host.write("poola/fs", "d/f.bin", b"data", mode=0o640)
        os.chown(old / "d" / "f.bin", 1234, 2345)
        os.chown(old / "d", 1234, 2345)
        os.symlink("d/f.bin", old / "link")
        host.write("poola/fs/child", "c.txt", b"child")
        before = host.tree("poola/fs")
        for target in (other_fs / "fs", host.root / "back" / "fs"):
            res = host.zfs("set", f"mountpoint={target}", "poola/fs", check=False)
            assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
            assert host.get("mountpoint", "poola/fs") == str(target)
            assert host.mountpoint("poola/fs") == target and not old.exists()
            assert host.tree("poola/fs") == before
            st = os.stat(target / "d" / "f.bin")
            assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 1234, 2345)
            assert (os.stat(target / "d").st_uid, os.readlink(target / "link")) == (
                1234,
                "d/f.bin",
            )
            assert (target / "child" / "c.txt").read_bytes() == b"child"
            assert host.mountpoint("poola/fs/child") == target / "child"
            old = target
        assert not (other_fs / "fs").exists()
    finally:
        shutil.rmtree(other_fs, ignore_errors=True)


def test_cross_host_send_recv_and_tree_helper(standin_host) -> None:
    a, bhost = standin_host("hosta"), standin_host("hostb")
    a.zfs("create", "poola/src")
    a.write("poola/src", "d/f.bin", os.urandom(1000))
    a.zfs("snapshot", "poola/src@s1")
    a.sh(
        f"zfs send poola/src@s1 | ZFS_STANDIN_ROOT={bhost.root} zfs recv poolb/dst",
    )
    assert bhost.tree("poolb/dst") == a.tree("poola/src")
    assert bhost.get("guid", "poolb/dst@s1") == a.get("guid", "poola/src@s1")


def test_resume_token_is_shaped_like_openzfs(host: StandinHost) -> None:
    host.zfs("create", "poola/src")
    host.write("poola/src", "big", os.urandom(1 << 20))
    host.zfs("snapshot", "poola/src@s1")
    host.sh("zfs send poola/src@s1 | head -c 200000 | zfs recv -s poola/dst", check=False)
    token = host.get("receive_resume_token", "poola/dst")
    version, cksum, length, payload = token.split("-", 3)
    assert version == "1"
    int(cksum, 16), int(length, 16), bytes.fromhex(payload)
    res = host.zfs("send", "-t", token[:-4] + "ffff", check=False)
    assert res.returncode == 255  # zfs_send_resume's -1 (test_peer_calls has it on OpenZFS)
    assert "resume token is corrupt" in res.stderr


def test_two_receives_into_different_datasets_run_concurrently(host: StandinHost) -> None:
    host.zfs("create", "poola/a")
    host.zfs("create", "poola/b")
    host.write("poola/a", "big", os.urandom(8 << 20))
    host.write("poola/b", "big", os.urandom(8 << 20))
    host.zfs("snapshot", "poola/a@s1", "poola/b@s1")
    procs = []
    for name in ("a", "b"):
        # a slow producer keeps each receive streaming for a while
        procs.append(
            subprocess.Popen(
                [
                    "/bin/sh",
                    "-c",
                    f"zfs send poola/{name}@s1 | (sleep 1; cat) | zfs recv poola/{name}-copy",
                ],
                env=host.env,
                stderr=subprocess.PIPE,
            )
        )
    t0 = time.monotonic()
    for p in procs:
        _, errout = p.communicate(timeout=60)
        assert p.returncode == 0, errout
    assert time.monotonic() - t0 < 3.0  # not serialised behind one another
    for name in ("a", "b"):
        assert host.tree(f"poola/{name}-copy") == host.tree(f"poola/{name}")


def test_zfs_get_is_not_blocked_by_a_streaming_receive(host: StandinHost) -> None:
    host.zfs("create", "poola/a")
    host.write("poola/a", "big", os.urandom(4 << 20))
    host.zfs("snapshot", "poola/a@s1")
    host.zfs("set", "zrepq:x=1", "poola/a")
    stream = host.sh("zfs send poola/a@s1 | base64 -w0").stdout
    proc = subprocess.Popen(
        ["/bin/sh", "-c", "base64 -d | zfs recv poola/copy"],
        env=host.env,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    half = len(stream) // 2 // 4 * 4
    proc.stdin.write(stream[:half].encode())
    proc.stdin.flush()
    time.sleep(0.5)  # the receive is now blocked reading stdin, mid-stream
    t0 = time.monotonic()
    assert host.get("zrepq:x", "poola/a") == "1"
    host.zfs("snapshot", "poola/a@during")
    assert time.monotonic() - t0 < 2.0
    assert proc.poll() is None
    proc.stdin.write(stream[half:].encode())
    proc.stdin.close()
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert host.snapshots("poola/copy") == ["poola/copy@s1"]


def test_concurrent_property_writers_do_not_lose_updates(host: StandinHost) -> None:
    host.zfs("create", "poola/c")
    errors: list[str] = []

    def setter(i: int) -> None:
        res = host.zfs("set", f"zrepq:k{i}={i}", "poola/c", check=False)
        if res.returncode:
            errors.append(res.stderr)

    threads = [threading.Thread(target=setter, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(12):
        assert host.get(f"zrepq:k{i}", "poola/c") == str(i)


def test_throughput_send_recv_256mib(standin_host) -> None:
    """Prints MB/s for `zfs send | zfs recv` of a 256 MiB incompressible file between two
    hosts (no assertion on speed; benchmarks push GiBs through this)."""
    a, bhost = standin_host("hosta"), standin_host("hostb")
    a.zfs("create", "poola/big")
    size = 256 << 20
    a.sh(f"head -c {size} /dev/urandom > {a.mountpoint('poola/big')}/blob")
    a.zfs("snapshot", "poola/big@s1")
    t0 = time.monotonic()
    a.sh(f"zfs send poola/big@s1 | ZFS_STANDIN_ROOT={bhost.root} zfs recv poolb/big")
    dt = time.monotonic() - t0
    print(f"\nstand-in send|recv: {size / dt / 1e6:.0f} MB/s ({size >> 20} MiB in {dt:.2f}s)")
    assert bhost.tree("poolb/big") == a.tree("poola/big")


def test_a_shared_root_stays_usable_by_every_user(tmp_path) -> None:
    """A world-writable state root (shared by root and a user that is not root, as the
    `unprivileged` contract tests use it): what root creates in it later stays writable for
    the other user, and the stand-in knows its caller (nobody may not snapshot root's fs)."""
    top = Path(tempfile.mkdtemp(prefix="zrepq-standin-", dir="/var/tmp"))
    try:
        top.chmod(0o755)
        host = StandinHost(top / "root", "shared")
        host.root.chmod(0o777)
        host.create_pool("poola")
        subprocess.run(["chmod", "-R", "a+rwX", str(host.root)], check=True)
        host.zfs("create", "poola/later")  # created by root after the chmod
        host.write("poola/later", "f", b"x")
        host.zfs("snapshot", "poola/later@s1")
        for path in (host.root / "state.json", host.root / "state.lock", host.root / "objects"):
            assert path.stat().st_mode & 0o002, path
        user = subprocess.run(as_user(UNPRIVILEGED, ["zfs", "snapshot", "poola/later@s2"]),
                              env=host.env, capture_output=True, text=True)  # fmt: skip
        assert user.returncode == 1
        assert user.stderr == "cannot create snapshots : permission denied\n"
        host.zfs("allow", UNPRIVILEGED, "snapshot", "poola/later")
        user = subprocess.run(as_user(UNPRIVILEGED, ["zfs", "snapshot", "poola/later@s2"]),
                              env=host.env, capture_output=True, text=True)  # fmt: skip
        assert user.returncode == 0, user.stderr
        assert host.snapshots("poola/later") == ["poola/later@s1", "poola/later@s2"]
    finally:
        shutil.rmtree(top, ignore_errors=True)
