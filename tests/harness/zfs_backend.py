"""The ZFS backend interface used by the contract tests (tests/contract).

A contract test talks to ZFS only through a `ZfsBackend`: the `zfs`/`zpool` CLI, a POSIX
shell with the backend's environment (mountpoints are real directories there), and the
names of two pools plus one fresh parent filesystem on each. Nothing in it is specific to
the stand-in, so the same tests run against real OpenZFS once a backend for it exists
(e.g. one that runs each command over ssh in a QEMU guest and gives every test a fresh
`pool/t<id>` parent). `StandinBackend` is the implementation over tests/standin.

The helpers below (`get`, `guid`, `write_file`, `tree`, ...) are built on those three
calls only, so they work on any backend.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from tests.harness.standin import StandinHost


@dataclass(frozen=True)
class ZfsResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> ZfsResult:
        if self.returncode != 0:
            raise AssertionError(
                f"{' '.join(self.argv)} exited {self.returncode}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )
        return self


# The user a test runs commands as when it needs one that is not root (`user=UNPRIVILEGED`):
# it exists on every Debian system (and in the QEMU guests), so nothing is added to the
# machine; `zfs allow` grants to it by name. Tests that use it carry the `unprivileged` mark
# (on the stand-in its state root then lives where that user can reach it).
UNPRIVILEGED = "nobody"
UNPRIVILEGED_GROUP = "nogroup"


def as_user(user: str | None, argv: list[str]) -> list[str]:
    """`argv` run as `user` (its uid, its group, its supplementary groups) with setpriv
    (util-linux: on the host and in the guests), or as is for None."""
    if user is None:
        return argv
    group = UNPRIVILEGED_GROUP if user == UNPRIVILEGED else user
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--", *argv]


class ZfsBackend(Protocol):
    """What a contract test may use. Commands never raise on a non-zero exit."""

    name: str
    pool: str  # a pool the test may create datasets in (under `base`)
    pool2: str  # a second pool (under `base2`)
    base: str  # a fresh, empty filesystem on `pool`, owned by this test
    base2: str  # a fresh, empty filesystem on `pool2`, owned by this test

    def zfs(self, *args: str, input: bytes | None = None, user: str | None = None) -> ZfsResult: ...

    def zpool(self, *args: str) -> ZfsResult: ...

    def sh(self, script: str, input: bytes | None = None, user: str | None = None) -> ZfsResult: ...


class StandinBackend:
    """`ZfsBackend` over the stand-in: one simulated host with pools `poola`, `poolb`."""

    name = "standin"

    def __init__(
        self, host: StandinHost, pool: str = "poola", pool2: str = "poolb", fresh: bool = True
    ):
        self.host = host
        self.pool = pool
        self.pool2 = pool2
        self.base = f"{pool}/ct"
        self.base2 = f"{pool2}/ct"
        if fresh:  # else `host` is a copy of a root where this was already done
            for p in (pool, pool2):
                host.create_pool(p)
            self.zfs("create", self.base).check()
            self.zfs("create", self.base2).check()

    def _wrap(self, res: subprocess.CompletedProcess[str]) -> ZfsResult:
        return ZfsResult(tuple(res.args), res.returncode, res.stdout, res.stderr)

    def zfs(self, *args: str, input: bytes | None = None, user: str | None = None) -> ZfsResult:
        if user is None:
            return self._wrap(self.host.zfs(*args, check=False, input=input))
        return self._as(user, ["zfs", *args], input, 120)

    def zpool(self, *args: str) -> ZfsResult:
        return self._wrap(self.host.zpool(*args, check=False))

    def sh(self, script: str, input: bytes | None = None, user: str | None = None) -> ZfsResult:
        if user is None:
            return self._wrap(self.host.sh(script, check=False, input=input))
        return self._as(user, ["/bin/sh", "-c", script], input, 300)

    def _as(self, user: str, argv: list[str], input: bytes | None, timeout: float) -> ZfsResult:
        """The stand-in runs as its caller, like zfs: as `user`, on a state root it can
        reach (a test marked `unprivileged` gets a shared one, see standin_fixtures)."""
        res = subprocess.run(
            as_user(user, argv),
            input=input if input is not None else b"",
            capture_output=True,
            env=self.host.env,
            timeout=timeout,
        )
        return ZfsResult(
            tuple(argv), res.returncode, res.stdout.decode(errors="replace"),
            res.stderr.decode(errors="replace"),
        )  # fmt: skip


# ----------------------------------------------------------------------------- helpers

q = shlex.quote


def ok(b: ZfsBackend, *args: str, input: bytes | None = None, user: str | None = None) -> str:
    """Run `zfs args...` (as `user`), require success, return stdout."""
    return b.zfs(*args, input=input, user=user).check().stdout


def sh_ok(b: ZfsBackend, script: str, input: bytes | None = None, user: str | None = None) -> str:
    return b.sh(script, input=input, user=user).check().stdout


def get(b: ZfsBackend, prop: str, ds: str) -> str:
    return ok(b, "get", "-H", "-p", "-o", "value", prop, ds).rstrip("\n")


def get_src(b: ZfsBackend, prop: str, ds: str) -> tuple[str, str]:
    out = ok(b, "get", "-H", "-o", "value,source", prop, ds).rstrip("\n")
    value, source = out.split("\t")
    return value, source


def guid(b: ZfsBackend, name: str) -> int:
    return int(get(b, "guid", name))


def exists(b: ZfsBackend, name: str) -> bool:
    return b.zfs("list", "-H", "-o", "name", "-t", "all", name).returncode == 0


def snapshots(b: ZfsBackend, fs: str) -> list[str]:
    """Short names of `fs`'s snapshots, oldest first."""
    out = ok(b, "list", "-H", "-o", "name", "-s", "createtxg", "-t", "snapshot", "-d", "1", fs)
    return [line.split("@", 1)[1] for line in out.split()]


def mountpoint(b: ZfsBackend, fs: str) -> str:
    return get(b, "mountpoint", fs)


def write_file(b: ZfsBackend, fs: str, rel: str, data: bytes, mode: str | None = None) -> None:
    path = f"{mountpoint(b, fs)}/{rel}"
    script = f'mkdir -p "$(dirname {q(path)})" && cat > {q(path)}'
    if mode:
        script += f" && chmod {mode} {q(path)}"
    sh_ok(b, script, input=data)


def read_file(b: ZfsBackend, fs: str, rel: str) -> bytes:
    res = b.sh(f"cat {q(mountpoint(b, fs) + '/' + rel)} | od -An -v -tx1")
    res.check()
    return bytes.fromhex("".join(res.stdout.split()))


def remove(b: ZfsBackend, fs: str, rel: str) -> None:
    sh_ok(b, f"rm -rf {q(mountpoint(b, fs) + '/' + rel)}")


def tree(b: ZfsBackend, fs: str) -> dict[str, str]:
    """{relpath: 'f <mode> <sha256>' | 'd <mode>' | 'l <target>'} of a mounted fs."""
    mp = mountpoint(b, fs)
    out = sh_ok(
        b,
        f"cd {q(mp)} && find . -mindepth 1 -xdev -printf '%y %m %p\\t%l\\n' | sort && "
        f"echo '--' && find . -xdev -type f -exec sha256sum {{}} + | sort -k2",
    )
    meta, _, sums = out.partition("--\n")
    hashes = {}
    for line in sums.splitlines():
        digest, path = line.split(None, 1)
        hashes[path.lstrip("*")] = digest
    result = {}
    for line in meta.splitlines():
        head, _, target = line.partition("\t")
        kind, mode, path = head.split(" ", 2)
        rel = path[2:]
        if kind == "f":
            result[rel] = f"f {mode} {hashes[path]}"
        elif kind == "d":
            result[rel] = f"d {mode}"
        elif kind == "l":
            result[rel] = f"l {target}"
        else:
            result[rel] = kind
    return result


def norm(text: str) -> str:
    """Collapse whitespace (OpenZFS wraps some messages over two lines)."""
    return re.sub(r"\s+", " ", text).strip()


def assert_fails(res: ZfsResult, *fragments: str, code: int = 1) -> None:
    """Exit code `code` and every fragment in stderr (whitespace-normalised)."""
    assert res.returncode == code, (
        f"{' '.join(res.argv)}: expected exit {code}, got {res.returncode}\n"
        f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    )
    err = norm(res.stderr)
    for frag in fragments:
        assert norm(frag) in err, f"{frag!r} not in stderr:\n{res.stderr}"


def zfs_version(b: ZfsBackend) -> tuple[int, int, int]:
    """The OpenZFS version `zfs version` reports (the stand-in reports the one it models)."""
    first = ok(b, "version").split()[0]  # zfs-2.3.2-2~bpo12+2
    m = re.match(r"zfs-(\d+)\.(\d+)\.(\d+)", first)
    assert m, f"cannot parse `zfs version`: {first!r}"
    return int(m[1]), int(m[2]), int(m[3])


def set_failure_code(b: ZfsBackend) -> int:
    """Exit status of a `zfs set` that OpenZFS refuses: 1 up to 2.2, 255 from 2.3 (its
    property callback returns -1)."""
    return 255 if zfs_version(b) >= (2, 3, 0) else 1


def send_recv(
    b: ZfsBackend,
    send_args: str,
    recv_args: str,
    user: str | None = None,
    recv_user: str | None = None,
) -> ZfsResult:
    """`zfs send SEND_ARGS | zfs recv RECV_ARGS` (both as `user`, or the receive alone as
    `recv_user`); the result is the receive's, with the send's stderr in front."""
    recv = shlex.join(as_user(recv_user, ["zfs", "recv"]))
    return b.sh(f"zfs send {send_args} | {recv} {recv_args}", user=user)


@contextmanager
def scratch_pool(b: ZfsBackend, suffix: str, *create_flags: str) -> Iterator[str]:
    """One more pool for this test, `<b.pool><suffix>` on a sparse file (e.g. `-d`: every
    feature disabled), destroyed with its file at the end."""
    name = f"{b.pool}{suffix}"
    vdev = f"/var/tmp/vdev-{name}"
    sh_ok(b, f"truncate -s 128M {q(vdev)}")
    try:
        b.zpool("create", "-f", *create_flags, name, vdev).check()
        yield name
    finally:
        b.zpool("destroy", "-f", name)
        b.sh(f"rm -f {q(vdev)}")
