"""What each operation returns: small JSON-able records (they cross the queue as dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncResult(Result):
    dataset: str
    host: str
    dest_host: str
    dest_fs: str
    status: str  # synced | unchanged | uptodate | skipped
    snapshot: str | None = None  # the snapshot that is now the last sent one
    base: str | None = None
    bytes_sent: int = 0
    seconds: float = 0.0
    resumed: bool = False
    completed: list[str] = field(default_factory=list)  # landed earlier, only marked sent now
    expired: list[str] = field(default_factory=list)
    message: str = ""
    # The base was the cursor bookmark (`fs#zrepq_...`): the base snapshot was gone.
    from_bookmark: str | None = None


@dataclass
class InitResult(Result):
    dataset: str
    host: str
    dest_host: str
    dest_fs: str
    snapshot: str
    bytes_sent: int = 0
    seconds: float = 0.0
    resumed: bool = False


@dataclass
class ExpireResult(Result):
    dataset: str
    host: str
    destroyed: list[str] = field(default_factory=list)
    remote_host: str | None = None
    remote_destroyed: list[str] = field(default_factory=list)
    remote_fs: str | None = None


@dataclass
class RoleResult(Result):
    """failover / takeover."""

    dataset: str
    host: str
    role: str  # "master" or "standby": what this side is now
    other_host: str
    other_fs: str
    synced: str | None = None  # the final snapshot sent, if any
    rolled_back_to: str | None = None
    message: str = ""


@dataclass
class StatusRow(Result):
    dataset: str
    src_fs: str
    src_host: str
    dest_fs: str
    dest_host: str
    master: bool
    last_sent: str | None
    last_sent_time: int | None  # zrep:sent seconds, or the snapshot's creation as zrep falls back
    savecount: int | None
    paused: dict[str, Any] | None = None  # {since, by, reason, expire}
    error: dict[str, Any] | None = None  # {message, time, snapshot}: the last sync failed
    rolled_back: dict[str, Any] | None = None  # {snapshot, time}: a deliberate sync fs@snap
    # {bookmark, time}: the last sync that sent from the cursor bookmark (its base was gone)
    from_bookmark: dict[str, Any] | None = None
    # -v: the standby's `keystatus` ("-": not encrypted; "unavailable": a raw standby's key
    # is not loaded, as it should be), for a master's row
    standby_keystatus: str | None = None
    tag: str = "zrep"  # the pair's tag (several standbys per dataset: a row per tag)


@dataclass
class HandbackResult(Result):
    """What `handback` removed; entries name the host (`host:pool/fs@snap`)."""

    dataset: str
    host: str
    other_host: str | None  # None with local_only
    other_fs: str | None
    released: list[str] = field(default_factory=list)  # snapshots whose hold was released
    bookmarks: list[str] = field(default_factory=list)  # cursor bookmarks destroyed
    properties: list[str] = field(default_factory=list)  # "host:fs property", inherited
    aborted: list[str] = field(default_factory=list)  # "host:fs" whose partial receive went


@dataclass
class Listing(Result):
    """`list`: the names (plain, `-L`) or the entries (`-v`), and zrep's text for them (for
    `-s`, the text alone: `zfs list`'s table)."""

    text: str
    names: list[str] | None = None
    entries: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names is not None:
            out["names"] = self.names
        if self.entries is not None:
            out["entries"] = self.entries
        out["text"] = self.text
        return out
