"""`ZfsHost`: the zfs operations zrepq needs on one host, with typed results.

Every control command goes through one choke point, `ZfsHost.run` (or `ZfsHost.run_steps`
for several writes in one round trip, `Batch`): argv from `commands.py` in, with the
engine's timeout (`EngineConfig.command_timeout`), a `CommandResult` out, or the typed
error `zfs_errors.py` reads from zfs's stderr. Each command's output is parsed here,
once. Reads fetch everything needed in one call (all of a dataset's zrep properties in one
`zfs get`, all its snapshots with guid, txg, creation and `zrep:sent` in another, or both in
one with `state`): calls, not bytes, dominate the cost of syncing many small datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import commands as cmd
from . import zfs_errors
from .errors import (
    CommandError,
    DatasetMissing,
    HoldExists,
    NoSuchDataset,
    NoSuchHold,
    NotConfigured,
    StateError,
)
from .model import (
    LOCK_PROPS,
    NATIVE_PROPS,
    PAIR_PROPS,
    ZREPQ_PROPS,
    DatasetInfo,
    Prop,
    Snapshot,
    zrepq_prop,
)
from .ports import CommandResult, Runner

if TYPE_CHECKING:
    from .bookmarks import Bookmark

# With TAG:sent, what `Snapshot` holds. `userrefs` (the number of holds) costs nothing in the
# same `zfs get` and tells which snapshots can carry a hold of ours at all (see `release`).
SNAPSHOT_PROPS = ("guid", "createtxg", "creation", "userrefs")
# What a `zfs get -d 1` returns: name, property, value, source.
_ROW = "name,property,value,source"

__all__ = ["Batch", "DatasetMissing", "Link", "ZfsHost"]


def _rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if line]


class ZfsHost:
    def __init__(self, runner: Runner, tag: str, timeout: float | None = None) -> None:
        self.runner = runner
        self.tag = tag
        self.timeout = timeout  # seconds per command; None: no limit

    @property
    def host(self) -> str:
        return self.runner.host

    def _p(self, name: str) -> str:
        return f"{self.tag}:{name}"

    def _user_keys(self) -> list[str]:
        return [self._p(k) for k in (*PAIR_PROPS, *LOCK_PROPS)] + [
            zrepq_prop(self.tag, k) for k in ZREPQ_PROPS
        ]

    def _key(self, prop: str) -> str:
        """`zrep:src-fs` -> `src-fs`; `zrepq:zrep:paused` -> `q:paused`; natives as they are."""
        qprefix = f"zrepq:{self.tag}:"
        if prop.startswith(qprefix):
            return "q:" + prop[len(qprefix) :]
        prefix = f"{self.tag}:"
        return prop[len(prefix) :] if prop.startswith(prefix) else prop

    def run(self, argv: Sequence[str], *, check: bool = True) -> CommandResult:
        """The one way a zfs command runs: with the timeout, failures typed by zfs's words."""
        try:
            return self.runner.run(argv, check=check, timeout=self.timeout)
        except CommandError as e:
            raise zfs_errors.typed(e) from None

    def _read(self, argv: Sequence[str], name: str) -> CommandResult:
        """A read of `name`: `DatasetMissing` when there is no such dataset."""
        try:
            return self.run(argv)
        except CommandError as e:
            if not zfs_errors.says(e.stderr, NoSuchDataset):
                raise
            raise DatasetMissing(
                f"{self.host}:{name} does not exist", dataset=name, host=self.host
            ) from None

    def _failed(self, res: CommandResult, message: str, name: str) -> CommandError:
        return zfs_errors.typed(
            CommandError(
                message,
                argv=res.argv,
                returncode=res.returncode,
                stderr=res.stderr,
                dataset=name,
                host=self.host,
            )
        )

    # ---- reads ---------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        res = self.run(cmd.exists(name), check=False)
        if res.returncode == 0:
            return True
        if zfs_errors.says(res.stderr, NoSuchDataset):
            return False
        raise self._failed(res, f"{self.host}: zfs list {name} failed: {res.stderr.strip()}", name)

    def info(self, name: str) -> DatasetInfo:
        """All zrep props (with sources) and the natives zrepq reads, in one `zfs get`."""
        keys = self._user_keys() + list(NATIVE_PROPS)
        res = self._read(cmd.get(keys, name, fields="property,value,source", parsable=True), name)
        props: dict[str, Prop] = {}
        for row in _rows(res.stdout):
            if len(row) < 3:
                continue
            props[self._key(row[0])] = Prop(row[1], row[2])
        return DatasetInfo(name, self.tag, props)

    def state(self, name: str) -> tuple[DatasetInfo, list[Snapshot]]:
        """`info(name)` and `snapshots(name)` in one `zfs get` (`-d 1`: the dataset and its
        snapshots, and child filesystems, which are skipped). Used for the other side of a
        sync, where every call is also an SSH session."""
        info, snaps, _ = self._state(name, "filesystem,volume,snapshot")
        return info, snaps

    def state_and_bookmarks(self, name: str) -> tuple[DatasetInfo, list[Snapshot], list[Bookmark]]:
        """`state(name)` and name's bookmarks (the replication cursor), in the same one call."""
        from .bookmarks import from_rows

        info, snaps, book_rows = self._state(name, "filesystem,volume,snapshot,bookmark")
        return info, snaps, from_rows(book_rows)

    def _state(self, name: str, types: str) -> tuple[DatasetInfo, list[Snapshot], list[list[str]]]:
        info_keys = [*self._user_keys(), *NATIVE_PROPS]
        sent = self._p("sent")
        keys = [*info_keys, *(k for k in SNAPSHOT_PROPS if k not in info_keys), sent]
        wanted = set(info_keys)
        props: dict[str, Prop] = {}
        snap_rows: list[list[str]] = []
        book_rows: list[list[str]] = []
        for row in self._get_depth1(name, types, keys):
            if row[0] == name:
                if row[1] in wanted:
                    props[self._key(row[1])] = Prop(row[2], row[3])
            elif row[0].startswith(f"{name}@"):
                snap_rows.append(row)
            elif row[0].startswith(f"{name}#"):
                book_rows.append(row)
        return DatasetInfo(name, self.tag, props), _snapshots_from_rows(snap_rows, sent), book_rows

    def all_configured(self) -> dict[str, DatasetInfo]:
        """Every filesystem/volume on the host with any zrep pair property, in one call."""
        keys = self._user_keys()
        res = self.run(cmd.get(keys, fields=_ROW, parsable=True, types="filesystem,volume"))
        by_ds: dict[str, dict[str, Prop]] = {}
        for row in _rows(res.stdout):
            if len(row) < 4:
                continue
            by_ds.setdefault(row[0], {})[self._key(row[1])] = Prop(row[2], row[3])
        return {
            name: info
            for name, props in by_ds.items()
            if (info := DatasetInfo(name, self.tag, props)).configured
        }

    def snapshots(self, fs: str) -> list[Snapshot]:
        """All snapshots of fs (not of its children), oldest first by createtxg."""
        sent = self._p("sent")
        return _snapshots_from_rows(self._get_depth1(fs, "snapshot", [*SNAPSHOT_PROPS, sent]), sent)

    def snapshots_and_bookmarks(self, fs: str) -> tuple[list[Snapshot], list[Bookmark]]:
        """`snapshots(fs)` and fs's bookmarks, in the same one call (`bookmarks.py`)."""
        from .bookmarks import from_rows

        sent = self._p("sent")
        rows = self._get_depth1(fs, "snapshot,bookmark", [*SNAPSHOT_PROPS, sent])
        snaps = [r for r in rows if "#" not in r[0]]
        return _snapshots_from_rows(snaps, sent), from_rows([r for r in rows if "#" in r[0]])

    def bookmarks(self, fs: str) -> list[Bookmark]:
        """fs's bookmarks (one `zfs get`), oldest first."""
        from .bookmarks import from_rows

        return from_rows(self._get_depth1(fs, "bookmark", ["guid", "createtxg", "creation"]))

    def _get_depth1(self, name: str, types: str, keys: list[str]) -> list[list[str]]:
        """Rows (name, property, value, source) of `zfs get -d 1 -t TYPES` on `name`: the
        dataset, its snapshots and its children, as `types` selects."""
        argv = cmd.get(keys, name, fields=_ROW, parsable=True, depth=1, types=types)
        res = self._read(argv, name)
        return [row for row in _rows(res.stdout) if len(row) >= 4]

    def all_last_sent(self) -> dict[str, Snapshot]:
        """For every fs on the host, its newest tag snapshot with a local `TAG:sent`."""
        sent = self._p("sent")
        res = self.run(
            cmd.get([sent], fields=_ROW, parsable=True, types="snapshot", sources="local")
        )
        best: dict[str, Snapshot] = {}
        for row in _rows(res.stdout):
            if len(row) < 4:
                continue
            snap = Snapshot(row[0], "", 0, 0, _int_or_none(row[2]))
            z = snap.zname(self.tag)
            if z is None:
                continue
            cur = best.get(snap.fs)
            cz = cur.zname(self.tag) if cur else None
            if cz is None or z > cz:
                best[snap.fs] = snap
        return best

    def lock_props(self, name: str) -> tuple[str | None, str | None]:
        """zrep's lock on `name`: (`TAG:lock-pid`, `TAG:lock-time`), each when set locally
        (zrep reads them with `-s local` too)."""
        keys = [self._p("lock-pid"), self._p("lock-time")]
        argv = cmd.get(keys, name, fields="property,value", parsable=True, sources="local")
        res = self._read(argv, name)
        found = {row[0]: row[1] for row in _rows(res.stdout) if len(row) >= 2}
        return found.get(self._p("lock-pid")), found.get(self._p("lock-time"))

    def holds(self, snapshot: str) -> list[str]:
        res = self.run(cmd.holds(snapshot))
        return [row[1] for row in _rows(res.stdout) if len(row) >= 2]

    # ---- writes --------------------------------------------------------------------------

    def set(self, name: str, assignments: dict[str, str]) -> None:
        if assignments:
            self.run(cmd.set_props(name, assignments))

    def inherit(self, name: str, prop: str) -> None:
        self.run(cmd.inherit(name, prop))

    def set_mount_option(self, name: str, prop: str, value: str | None) -> bool:
        """Set (None: inherit) a mount option such as readonly; False when the property is
        set but the remount was refused: a worker that is not root changing a mounted
        filesystem (OpenZFS sets the property, then libzfs's remount needs root)."""
        argv = cmd.inherit(name, prop) if value is None else cmd.set_props(name, {prop: value})
        try:
            self.run(argv)
        except CommandError as e:
            if not zfs_errors.only_remount_refused(e.stderr or ""):
                raise
            now = self.info(name).props.get(prop)  # the property is what was asked? else raise
            if now is None or (now.source == "local") != (value is not None):
                raise
            if value is not None and now.value != value:
                raise
            return False
        return True

    def set_q(self, name: str, values: dict[str, str]) -> None:
        """Set zrepq's own properties (`zrepq:<tag>:<key>`) on a dataset."""
        self.set(name, {zrepq_prop(self.tag, k): v for k, v in values.items()})

    def clear_q(self, info: DatasetInfo, *keys: str) -> None:
        """Inherit those of zrepq's own properties that are set locally (no call otherwise)."""
        for k in keys:
            if info.q(k) is not None:
                self.inherit(info.name, zrepq_prop(self.tag, k))

    def snapshot(self, name: str, *, recursive: bool = False) -> None:
        self.run(cmd.snapshot(name, recursive=recursive))

    def rename(self, old: str, new: str, *, recursive: bool = False) -> None:
        self.run(cmd.rename(old, new, recursive=recursive))

    def destroy(self, name: str, *, recursive: bool = False) -> None:
        self.run(cmd.destroy(name, recursive=recursive))

    def rollback(self, snapshot: str, *, flags: str = "-r") -> None:
        self.run(cmd.rollback(snapshot, flags=flags))

    def _tolerant(
        self, argv: Sequence[str], what: str, name: str, benign: tuple[type[CommandError], ...]
    ) -> str:
        """Run `argv`; an error whose every stderr line is one of `benign` means "already so"
        (a command naming several snapshots reports each one on its own line). Returns stderr
        (the benign lines)."""
        return self._tolerated(self.run(argv, check=False), what, name, benign)

    def _tolerated(
        self, res: CommandResult, what: str, name: str, benign: tuple[type[CommandError], ...]
    ) -> str:
        """`_tolerant`'s verdict on a command that ran."""
        if res.returncode != 0 and not zfs_errors.only(res.stderr, benign):
            raise self._failed(
                res, f"{self.host}: cannot {what} {name}: {res.stderr.strip()}", name
            )
        return res.stderr if res.returncode != 0 else ""

    def hold(self, tag: str, snapshot: str) -> None:
        """Idempotent: a hold we already have is fine."""
        self._tolerant(cmd.hold(tag, snapshot), "hold", snapshot, (HoldExists,))

    def release(self, tag: str, *snapshots: str) -> list[str]:
        """Release `tag` from every snapshot named, in one `zfs release` (it goes on past a
        snapshot that fails, reporting each on its own line: `cannot release hold from
        snapshot 'FS@S': no such tag on this dataset`). Idempotent: a snapshot without that
        hold, or gone, is fine. No call when none is named. Returns those released."""
        if not snapshots:
            return []
        argv = cmd.release(tag, *snapshots)
        err = self._tolerant(argv, "release", ", ".join(snapshots), (NoSuchHold, NoSuchDataset))
        return [s for s in snapshots if f"'{s}'" not in err]

    def batch(self) -> Batch:
        """Writes to run in order in one round trip (`Batch`)."""
        return Batch(self)

    def run_steps(self, steps: Sequence[Step]) -> None:
        """Run `steps` in order with `Runner.run_many` (one remote command for all of them),
        each outcome judged by its step as the single verb judges it: the first failure
        that is not "already so" raises the verb's own typed error, naming its command, and
        nothing after it runs. After one that is (the batch stops at any non-zero exit), the
        rest run in a next round trip."""
        pending = list(steps)
        while pending:
            try:
                done = self.runner.run_many([s.argv for s in pending], timeout=self.timeout)
            except CommandError as e:
                raise zfs_errors.typed(e) from None
            if not done:
                raise CommandError(f"{self.host}: a batch ran no command", host=self.host)
            for step, outcome in zip(pending, done, strict=False):
                if isinstance(outcome, CommandError):
                    step.judge(self, outcome)
            pending = pending[len(done) :]

    def create(self, name: str, flags: Sequence[str] = ()) -> None:
        self.run(cmd.create(name, flags))

    def mount(self, name: str) -> None:
        self.run(cmd.mount(name))

    def abort_resume(self, name: str) -> None:
        self.run(cmd.abort_resume(name))

    def own_props(self, name: str, prefix: str) -> list[tuple[str, str]]:
        """(property, source) of every user property of `name` starting with `prefix` that is
        set locally or received (what `zfs inherit` can remove)."""
        argv = cmd.get(["all"], name, fields="property,source", sources="local,received")
        return [
            (row[0], row[1])
            for row in _rows(self.run(argv).stdout)
            if len(row) >= 2 and row[0].startswith(prefix)
        ]

    def props_with_source(self, name: str) -> list[tuple[str, str]]:
        """(property, source) of every property of `name`, as `zfs get all` lists them."""
        res = self.run(cmd.get(["all"], name, fields="property,source"))
        rows = (line.partition("\t") for line in res.stdout.splitlines())
        return [(prop, source) for prop, _, source in rows]

    def local_props(self, name: str) -> list[list[str]]:
        """[property, value] of every property set locally or received: zrep's `list -v`."""
        argv = cmd.get(["all"], name, fields="property,value", sources="local,received")
        return [line.split("\t", 1) for line in self.run(argv).stdout.splitlines() if line]

    def creation(self, snapshot: str) -> str:
        """When `snapshot` was made, as zfs prints it (`Tue Nov 24 01:03 2026`)."""
        return self.run(cmd.get(["creation"], snapshot, fields="value")).stdout.strip()

    def snapshot_table(self, fs: str) -> str:
        """`zfs list -r -t snapshot -o name,creation` as zfs prints it: zrep's `list -s`."""
        return self.run(cmd.list_snapshots(fs)).stdout

    def require(self, name: str) -> DatasetInfo:
        info = self.info(name)
        if not info.configured:
            raise NotConfigured(
                f"{self.host}:{name} is not a zrep registered filesystem (no {self.tag}:dest-fs)",
                dataset=name,
                host=self.host,
            )
        return info

    def require_type(self, info: DatasetInfo) -> None:
        if info.type not in ("filesystem", "volume"):
            raise StateError(
                f"{self.host}:{info.name} is a {info.type}, expected a filesystem or volume",
                dataset=info.name,
                host=self.host,
            )


@dataclass(frozen=True)
class Step:
    """One command of a `Batch` and how its failure is judged: `judge` raises what the
    single verb would raise for it, or returns when the failure means "already so"."""

    argv: tuple[str, ...]
    judge: Callable[[ZfsHost, CommandError], None]


def _raise(zh: ZfsHost, err: CommandError) -> None:
    """A `set` that failed: the error `ZfsHost.run` raises for it."""
    raise zfs_errors.typed(err)


def _tolerating(
    what: str, name: str, benign: tuple[type[CommandError], ...]
) -> Callable[[ZfsHost, CommandError], None]:
    def judge(zh: ZfsHost, err: CommandError) -> None:
        res = CommandResult(zh.host, err.argv, err.returncode or 1, "", err.stderr)
        zh._tolerated(res, what, name, benign)

    return judge


class Batch:
    """Writes on one host that follow each other, run in one round trip (issue 17: a remote
    command is an SSH round trip, a sync's far side made one per write).

    Collect with the verbs (`set`, `hold`, `release`: the same commands and the same
    verdicts as `ZfsHost`'s), then `run()`: in order, stopping at the first real
    failure, with that verb's own typed error (`ZfsHost.run_steps`). Use it only where
    running the later writes after an earlier one failed was never wanted anyway."""

    def __init__(self, zh: ZfsHost) -> None:
        self.zh = zh
        self.steps: list[Step] = []

    def set(self, name: str, assignments: dict[str, str]) -> Batch:
        if assignments:
            self.steps.append(Step(tuple(cmd.set_props(name, assignments)), _raise))
        return self

    def hold(self, tag: str, snapshot: str) -> Batch:
        judge = _tolerating("hold", snapshot, (HoldExists,))
        self.steps.append(Step(tuple(cmd.hold(tag, snapshot)), judge))
        return self

    def release(self, tag: str, *snapshots: str) -> Batch:
        if snapshots:
            judge = _tolerating("release", ", ".join(snapshots), (NoSuchHold, NoSuchDataset))
            self.steps.append(Step(tuple(cmd.release(tag, *snapshots)), judge))
        return self

    def run(self) -> None:
        if self.steps:
            self.zh.run_steps(self.steps)
        self.steps = []


@dataclass(frozen=True)
class Link:
    """The two ends of one replication: `src`'s dataset `src_fs` into `dst`'s `dst_fs`.

    A push (sync, init, failover's final sync) has this host at `src`; a pull (refresh) has
    it at `dst`."""

    src: ZfsHost
    src_fs: str
    dst: ZfsHost
    dst_fs: str


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _snapshots_from_rows(rows: Iterable[list[str]], sent_prop: str) -> list[Snapshot]:
    acc: dict[str, dict[str, tuple[str, str]]] = {}
    for row in rows:
        if len(row) < 4:
            continue
        acc.setdefault(row[0], {})[row[1]] = (row[2], row[3])
    snaps = []
    for name, p in acc.items():
        sent_v, sent_src = p.get(sent_prop, ("-", "-"))
        snaps.append(
            Snapshot(
                name=name,
                guid=p.get("guid", ("", ""))[0],
                createtxg=_int_or_none(p.get("createtxg", ("0", ""))[0]) or 0,
                creation=_int_or_none(p.get("creation", ("0", ""))[0]) or 0,
                sent=_int_or_none(sent_v) if sent_src == "local" else None,
                userrefs=_int_or_none(p["userrefs"][0]) if "userrefs" in p else None,
            )
        )
    snaps.sort(key=lambda s: s.createtxg)
    return snaps
