"""Receives in progress: OpenZFS's `DST/%recv` while a receive writes into an existing
filesystem.

Measured on OpenZFS 2.1.11 and 2.3.2 (tests/contract/test_send_recv.py): while one receive
writes into a filesystem, a second one into it is refused at its start, whatever its own
flags. When the first has `-s`, the filesystem shows its `receive_resume_token` already and
the refusal says `DST contains partially-complete state from "zfs receive -s".`; without
`-s` it says `dataset is busy`. The first goes on and lands.

The stand-in keeps one file per filesystem being received into, naming the receiving
process (pid and start time, so a reused pid is not taken for it). The file is linked into
place, so of two receives starting together exactly one gets it. A file whose process has
ended (a receive killed outright) counts for nothing and is replaced.
"""

import contextlib
import json
import os
from urllib.parse import quote, unquote

from .state import Host


def _dir(host: Host) -> str:
    return os.path.join(host.root, "receiving")


def _path(host: Host, fs: str) -> str:
    return os.path.join(_dir(host), quote(fs, safe=""))


def _start_time(pid: int) -> "str | None":
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _read(path: str) -> "dict | None":
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def running(host: Host, fs: str) -> "dict | None":
    """The receive writing into `fs` now ({"pid", "start", "resumable", "token"}), if any."""
    rec = _read(_path(host, fs))
    if rec is None or _start_time(rec["pid"]) != rec["start"]:
        return None
    return rec


def claim(host: Host, fs: str, resumable: bool, token: "str | None") -> "dict | None":
    """Mark `fs` as received into by this process. Returns the other receive's record instead
    when one already writes into it."""
    where = _dir(host)
    if not os.path.isdir(where):
        os.makedirs(where, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(where, 0o777)  # receives run as any user (delegated `zfs allow`)
    me = {"pid": os.getpid(), "start": _start_time(os.getpid()),
          "resumable": resumable, "token": token}  # fmt: skip
    tmp = os.path.join(where, ".%d.%s" % (os.getpid(), os.urandom(4).hex()))
    with open(tmp, "w") as fh:
        json.dump(me, fh)
    path = _path(host, fs)
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
                return None
            except FileExistsError:
                other = running(host, fs)
                if other is not None:
                    return other
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # an ended receive's (killed before it could remove it)
        return running(host, fs) or {"resumable": False, "token": None}
    finally:
        os.unlink(tmp)


def release(host: Host, fs: str) -> None:
    """This process no longer receives into `fs`."""
    path = _path(host, fs)
    rec = _read(path)
    if rec is not None and rec.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def tokens(host: Host) -> dict:
    """The resume token each filesystem being received into with `-s` shows meanwhile."""
    try:
        names = os.listdir(_dir(host))
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        if name.startswith("."):
            continue
        fs = unquote(name)
        rec = running(host, fs)
        if rec is not None and rec.get("token"):
            out[fs] = rec["token"]
    return out
