"""Every `zfs` argv zrepq runs, built here and nowhere else: pure functions, no I/O.

Names reach these functions validated (`names.py`); the argv is a list, so nothing is quoted
here (a remote runner quotes it for the remote shell, a local one runs it without a shell).
`ZfsHost` (zfs.py) runs the control commands; the engine's `steps.stream` hands the send and
receive argv to the transport's pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .config import EngineConfig

Argv = tuple[str, ...]


# ---- reads -------------------------------------------------------------------------------


def get(
    props: Iterable[str],
    *names: str,
    fields: str,
    parsable: bool = False,
    depth: int | None = None,
    types: str | None = None,
    sources: str | None = None,
) -> Argv:
    """`zfs get -H [-p] [-d N] [-t TYPES] [-s SOURCES] -o FIELDS PROPS [NAME...]`: one line
    per (dataset, property), tab-separated; without names, every dataset of `types`."""
    argv = ["zfs", "get", "-H"]
    if parsable:
        argv.append("-p")  # numbers as numbers, dates as seconds
    if depth is not None:
        argv += ["-d", str(depth)]
    if types is not None:
        argv += ["-t", types]
    if sources is not None:
        argv += ["-s", sources]
    return (*argv, "-o", fields, ",".join(props), *names)


def exists(name: str) -> Argv:
    return ("zfs", "list", "-H", "-o", "name", name)


def list_snapshots(fs: str) -> Argv:
    """zrep's `list -s`: the plain table of every snapshot under fs, with its creation."""
    return ("zfs", "list", "-r", "-t", "snapshot", "-o", "name,creation", fs)


def holds(snapshot: str) -> Argv:
    return ("zfs", "holds", "-H", snapshot)


# ---- writes ------------------------------------------------------------------------------


def set_props(name: str, assignments: dict[str, str]) -> Argv:
    return ("zfs", "set", *(f"{k}={v}" for k, v in assignments.items()), name)


def inherit(name: str, prop: str) -> Argv:
    return ("zfs", "inherit", prop, name)


def _r(recursive: bool) -> list[str]:
    return ["-r"] if recursive else []


def snapshot(name: str, *, recursive: bool = False) -> Argv:
    return ("zfs", "snapshot", *_r(recursive), name)


def rename(old: str, new: str, *, recursive: bool = False) -> Argv:
    return ("zfs", "rename", *_r(recursive), old, new)


def destroy(name: str, *, recursive: bool = False) -> Argv:
    return ("zfs", "destroy", *_r(recursive), name)


def rollback(snapshot: str, *, flags: str = "-r") -> Argv:
    """`-r` destroys newer snapshots, `-R` also their clones; both stop at a held one."""
    return ("zfs", "rollback", *([flags] if flags else []), snapshot)


def hold(tag: str, snapshot: str) -> Argv:
    return ("zfs", "hold", tag, snapshot)


def release(tag: str, *snapshots: str) -> Argv:
    return ("zfs", "release", tag, *snapshots)


def bookmark(snapshot: str, bookmark: str) -> Argv:
    """`zfs bookmark fs@snap fs#name`: the replication cursor (`bookmarks.py`)."""
    return ("zfs", "bookmark", snapshot, bookmark)


def create(name: str, flags: Sequence[str] = ()) -> Argv:
    return ("zfs", "create", *flags, name)


def mount(name: str) -> Argv:
    return ("zfs", "mount", name)


def abort_resume(name: str) -> Argv:
    """Discard a partial receive (`recv -s` state) on `name`."""
    return ("zfs", "recv", "-A", name)


# ---- the stream --------------------------------------------------------------------------


def send(args: Sequence[str]) -> Argv:
    """`zfs send -v -P ARGS`: `-P` prints the size estimate first, then bytes sent once a
    second, on stderr (the pipeline's progress)."""
    return ("zfs", "send", "-v", "-P", *args)


def recv(args: Sequence[str]) -> Argv:
    return ("zfs", "recv", *args)


def send_flags(config: EngineConfig) -> list[str]:
    """ZREP_R=-R and ZREP_SEND_FLAGS."""
    return (["-R"] if config.recursive else []) + list(config.send_flags)


def incremental(config: EngineConfig, base: str, new: str) -> list[str]:
    """`send` args of a sync: every snapshot from `base` to `new` (`-I`, or zrep's `-i`).
    From a bookmark (`fs#name`) always `-i`: zfs refuses `-I` from one."""
    inc = "-i" if "#" in base else config.inc_flag
    return [*send_flags(config), inc, base, new]


def full(config: EngineConfig, snapshot: str) -> list[str]:
    """`send` args of init: the whole of `snapshot`, with its properties (`-p`)."""
    return [*send_flags(config), "-p", snapshot]


def resumed(token: str) -> list[str]:
    """`send` args that finish a partial receive."""
    return ["-t", token]


def sync_recv_flags(config: EngineConfig, *, force: bool) -> list[str]:
    """`recv` flags of a sync, but `-s` (see `resume.stream_into`) and the dataset."""
    flags = ["-u"] if config.recv_unmounted else []  # a worker that is not root cannot mount
    if force:
        flags.append("-F")
    if config.recursive:
        # -R carries the source's zrep:master=yes: never let it arrive (zrep issue 206).
        flags += ["-x", f"{config.tag}:master"]
    return flags


def init_recv_flags(config: EngineConfig) -> list[str]:
    """`recv` flags of init: not mounted, read-only (unless the destination was created
    with ZREP_CREATE_FLAGS: set after), over whatever is there, never `TAG:master`."""
    flags = ["-u"]
    if not config.create_flags:
        flags += ["-o", "readonly=on"]
    return [*flags, "-F", "-x", f"{config.tag}:master"]
