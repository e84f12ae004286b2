"""Frozen values parsed from `zfs` output: snapshots and a dataset's zrep configuration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from .names import SnapName, parse_snapname

T = TypeVar("T")

# zrep's per-pair properties, without the tag prefix.
PAIR_PROPS = ("src-fs", "src-host", "dest-fs", "dest-host", "savecount", "master")
LOCK_PROPS = ("lock-pid", "lock-time")
NATIVE_PROPS = (
    "type", "readonly", "written", "mounted", "receive_resume_token", "mountpoint",
    "encryption", "keystatus",  # crypto.py: raw sends, a standby's key
)  # fmt: skip
# zrepq's own state, `zrepq:<tag>:<name>` on the master fs: upstream zrep never reads these.
# Keyed in DatasetInfo.props as "q:<name>".
ZREPQ_PROPS = (
    "paused",  # epoch seconds when paused
    "paused-by",
    "paused-reason",
    "paused-expire",  # "yes": expire is paused too
    "last-error",  # first line of the last failed sync's error
    "last-error-time",
    "last-error-snapshot",
    "rolled-back-to",  # a deliberate `sync fs@snap`: not an error
    "rolled-back-time",
    "bookmark-base",  # the cursor bookmark the last sync from a bookmark sent from
    "bookmark-base-time",
)


def zrepq_prop(tag: str, name: str) -> str:
    return f"zrepq:{tag}:{name}"


@dataclass(frozen=True)
class Prop:
    value: str
    source: str  # "local", "received", "inherited from X", "default", "-"

    @property
    def is_set(self) -> bool:
        return self.value not in ("-", "")


@dataclass(frozen=True)
class Snapshot:
    name: str  # full name, fs@snap
    guid: str
    createtxg: int
    creation: int
    sent: int | None = None  # zrep:sent, only when set locally (zrep's definition)
    # How many `zfs hold`s it carries (anyone's), read in the same `zfs get` as the rest;
    # None when not read. 0 means certainly none of ours: no `zfs release` needed.
    userrefs: int | None = None

    @property
    def fs(self) -> str:
        return self.name.split("@", 1)[0]

    @property
    def short(self) -> str:
        return self.name.split("@", 1)[1]

    def zname(self, tag: str) -> SnapName | None:
        return parse_snapname(self.short, tag)


class _Prop(Generic[T]):
    """A `DatasetInfo` attribute: one of its properties' value, parsed; None when it is not
    set (or does not parse)."""

    def __init__(self, key: str, parse: Callable[[str], T]) -> None:
        self.key, self.parse = key, parse

    def __get__(self, info: DatasetInfo, owner: object = None) -> T | None:
        value = info.get(self.key)
        try:
            return self.parse(value) if value is not None else None
        except ValueError:
            return None


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset's zrep properties (with sources) and the native ones zrepq reads."""

    name: str
    tag: str
    props: Mapping[str, Prop]  # user props keyed without the tag ("src-fs"), natives by name

    def get(self, key: str) -> str | None:
        p = self.props.get(key)
        return p.value if p is not None and p.is_set else None

    @property
    def configured(self) -> bool:
        """zrep's test: a dest-fs value from any source (received counts on the standby)."""
        return self.get("dest-fs") is not None

    @property
    def is_master(self) -> bool:
        """`zrep:master=yes` counts only when set locally: a received one is a bug (split brain)."""
        p = self.props.get("master")
        return p is not None and p.value == "yes" and p.source == "local"

    # The pair's properties and the natives, as values (None: not set).
    src_fs = _Prop("src-fs", str)
    src_host = _Prop("src-host", str)
    dest_fs = _Prop("dest-fs", str)
    dest_host = _Prop("dest-host", str)
    savecount = _Prop("savecount", int)
    type = _Prop("type", str)
    written = _Prop("written", int)  # bytes written since the newest snapshot
    resume_token = _Prop("receive_resume_token", str)  # a partial receive is there to resume

    def q(self, name: str) -> str | None:
        """One of zrepq's own properties (`zrepq:<tag>:<name>`), when set locally."""
        p = self.props.get(f"q:{name}")
        return p.value if p is not None and p.is_set and p.source == "local" else None

    @property
    def paused(self) -> bool:
        return self.q("paused") is not None

    @property
    def readonly(self) -> bool:
        return self.get("readonly") == "on"

    @property
    def mounted(self) -> bool:
        return self.get("mounted") == "yes"


def may_hold(s: Snapshot) -> bool:
    """Can `s` carry a hold of ours? Yes unless its `userrefs` was read as 0."""
    return s.userrefs != 0


def zrep_snapshots(snaps: list[Snapshot], tag: str) -> list[Snapshot]:
    """The tag's snapshots in sequence order (zrep sorts names; the seq is the key)."""
    keyed = [(z, s) for s in snaps if (z := s.zname(tag)) is not None]
    keyed.sort(key=lambda pair: pair[0])
    return [s for _, s in keyed]


def last_sent(snaps: list[Snapshot], tag: str) -> Snapshot | None:
    """zrep's "last sent": the newest tag snapshot with a local `TAG:sent`."""
    sent = [s for s in zrep_snapshots(snaps, tag) if s.sent is not None]
    return sent[-1] if sent else None


def latest_zrep(snaps: list[Snapshot], tag: str) -> Snapshot | None:
    ours = zrep_snapshots(snaps, tag)
    return ours[-1] if ours else None


def next_snapname(snaps: list[Snapshot], tag: str) -> SnapName:
    """Highest existing sequence + 1 (counting `_unsent` ones), `TAG_000000` when none."""
    seqs = [z.seq for s in snaps if (z := s.zname(tag)) is not None]
    return SnapName(max(seqs) + 1 if seqs else 0, tag)
