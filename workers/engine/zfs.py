"""`ZfsHost`: the zfs operations zrepq needs on one host, with typed results.

Every `zfs` command the engine runs is built here, as an argv list, and its output is parsed
here, once. Reads fetch everything needed in one call (all of a dataset's zrep properties in
one `zfs get`, all its snapshots with guid, txg, creation and `zrep:sent` in another, or both
in one with `state`): calls, not bytes, dominate the cost of syncing many small datasets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import CommandError, NotConfigured, StateError
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

# With TAG:sent, what `Snapshot` holds. `userrefs` (the number of holds) costs nothing in the
# same `zfs get` and tells which snapshots can carry a hold of ours at all (see `release`).
SNAPSHOT_PROPS = ("guid", "createtxg", "creation", "userrefs")
_MISSING = ("dataset does not exist", "could not find any snapshots to destroy")


class DatasetMissing(NotConfigured):
    kind = "missing"


def _rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if line]


class ZfsHost:
    def __init__(self, runner: Runner, tag: str) -> None:
        self.runner = runner
        self.tag = tag

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

    def zfs(self, *args: str, check: bool = True) -> CommandResult:
        return self.runner.run(("zfs", *args), check=check)

    def _missing(self, err: CommandError, name: str) -> DatasetMissing | None:
        if any(m in err.stderr for m in _MISSING):
            return DatasetMissing(
                f"{self.host}:{name} does not exist", dataset=name, host=self.host
            )
        return None

    # ---- reads ---------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        res = self.zfs("list", "-H", "-o", "name", name, check=False)
        if res.returncode == 0:
            return True
        if any(m in res.stderr for m in _MISSING):
            return False
        raise CommandError(
            f"{self.host}: zfs list {name} failed: {res.stderr.strip()}",
            argv=res.argv,
            returncode=res.returncode,
            stderr=res.stderr,
            dataset=name,
            host=self.host,
        )

    def info(self, name: str) -> DatasetInfo:
        """All zrep props (with sources) and the natives zrepq reads, in one `zfs get`."""
        keys = self._user_keys() + list(NATIVE_PROPS)
        try:
            res = self.zfs("get", "-H", "-p", "-o", "property,value,source", ",".join(keys), name)
        except CommandError as e:
            raise (self._missing(e, name) or e) from None
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
        info_keys = [*self._user_keys(), *NATIVE_PROPS]
        sent = self._p("sent")
        keys = [*info_keys, *(k for k in SNAPSHOT_PROPS if k not in info_keys), sent]
        wanted = set(info_keys)
        props: dict[str, Prop] = {}
        snap_rows: list[list[str]] = []
        prefix = f"{name}@"
        for row in self._get_depth1(name, "filesystem,volume,snapshot", keys):
            if row[0] == name:
                if row[1] in wanted:
                    props[self._key(row[1])] = Prop(row[2], row[3])
            elif row[0].startswith(prefix):
                snap_rows.append(row)
        return DatasetInfo(name, self.tag, props), _snapshots_from_rows(snap_rows, sent)

    def all_configured(self) -> dict[str, DatasetInfo]:
        """Every filesystem/volume on the host with any zrep pair property, in one call."""
        keys = ",".join(self._user_keys())
        res = self.zfs(
            "get", "-H", "-p", "-t", "filesystem,volume", "-o", "name,property,value,source", keys
        )
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

    def _get_depth1(self, name: str, types: str, keys: list[str]) -> list[list[str]]:
        """Rows (name, property, value, source) of `zfs get -d 1 -t TYPES` on `name`: the
        dataset, its snapshots and its children, as `types` selects."""
        try:
            res = self.zfs(
                "get", "-H", "-p", "-d", "1", "-t", types,
                "-o", "name,property,value,source", ",".join(keys), name,
            )  # fmt: skip
        except CommandError as e:
            raise (self._missing(e, name) or e) from None
        return [row for row in _rows(res.stdout) if len(row) >= 4]

    def all_last_sent(self) -> dict[str, Snapshot]:
        """For every fs on the host, its newest tag snapshot with a local `TAG:sent`."""
        sent = self._p("sent")
        res = self.zfs(
            "get",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-s",
            "local",
            "-o",
            "name,property,value,source",
            sent,
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
        try:
            res = self.zfs(
                "get", "-H", "-p", "-s", "local", "-o", "property,value",
                f"{self._p('lock-pid')},{self._p('lock-time')}", name,
            )  # fmt: skip
        except CommandError as e:
            raise (self._missing(e, name) or e) from None
        found = {row[0]: row[1] for row in _rows(res.stdout) if len(row) >= 2}
        return found.get(self._p("lock-pid")), found.get(self._p("lock-time"))

    def holds(self, snapshot: str) -> list[str]:
        res = self.zfs("holds", "-H", snapshot)
        return [row[1] for row in _rows(res.stdout) if len(row) >= 2]

    # ---- writes --------------------------------------------------------------------------

    def set(self, name: str, assignments: dict[str, str]) -> None:
        if assignments:
            self.zfs("set", *(f"{k}={v}" for k, v in assignments.items()), name)

    def inherit(self, name: str, prop: str) -> None:
        self.zfs("inherit", prop, name)

    def set_q(self, name: str, values: dict[str, str]) -> None:
        """Set zrepq's own properties (`zrepq:<tag>:<key>`) on a dataset."""
        self.set(name, {zrepq_prop(self.tag, k): v for k, v in values.items()})

    def clear_q(self, info: DatasetInfo, *keys: str) -> None:
        """Inherit those of zrepq's own properties that are set locally (no call otherwise)."""
        for k in keys:
            if info.q(k) is not None:
                self.inherit(info.name, zrepq_prop(self.tag, k))

    def snapshot(self, name: str, *, recursive: bool = False) -> None:
        self.zfs("snapshot", *(["-r"] if recursive else []), name)

    def rename(self, old: str, new: str, *, recursive: bool = False) -> None:
        self.zfs("rename", *(["-r"] if recursive else []), old, new)

    def destroy(self, name: str, *, recursive: bool = False) -> None:
        self.zfs("destroy", *(["-r"] if recursive else []), name)

    def rollback(self, snapshot: str, *, flags: str = "-r") -> None:
        self.zfs("rollback", *([flags] if flags else []), snapshot)

    def _tolerant(self, what: str, name: str, benign: tuple[str, ...], *args: str) -> str:
        """Run `zfs ARGS`; an error whose every stderr line has one of `benign` means "already
        so" (a command naming several snapshots reports each one on its own line). Returns
        stderr (the benign lines)."""
        res = self.zfs(*args, check=False)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        harmless = bool(lines) and all(any(m in ln for m in benign) for ln in lines)
        if res.returncode != 0 and not harmless:
            raise CommandError(
                f"{self.host}: cannot {what} {name}: {res.stderr.strip()}",
                argv=res.argv,
                returncode=res.returncode,
                stderr=res.stderr,
                dataset=name,
                host=self.host,
            )
        return res.stderr if res.returncode != 0 else ""

    def hold(self, tag: str, snapshot: str) -> None:
        """Idempotent: a hold we already have is fine."""
        self._tolerant("hold", snapshot, ("tag already exists",), "hold", tag, snapshot)

    def release(self, tag: str, *snapshots: str) -> list[str]:
        """Release `tag` from every snapshot named, in one `zfs release` (it goes on past a
        snapshot that fails, reporting each on its own line: `cannot release hold from
        snapshot 'FS@S': no such tag on this dataset`). Idempotent: a snapshot without that
        hold, or gone, is fine. No call when none is named. Returns those released."""
        if not snapshots:
            return []
        benign = ("no such tag", "does not exist")
        err = self._tolerant("release", ", ".join(snapshots), benign, "release", tag, *snapshots)
        return [s for s in snapshots if f"'{s}'" not in err]

    def create(self, name: str, flags: Sequence[str] = ()) -> None:
        self.zfs("create", *flags, name)

    def mount(self, name: str) -> None:
        self.zfs("mount", name)

    def abort_resume(self, name: str) -> None:
        self.zfs("recv", "-A", name)

    def own_props(self, name: str, prefix: str) -> list[tuple[str, str]]:
        """(property, source) of every user property of `name` starting with `prefix` that is
        set locally or received (what `zfs inherit` can remove)."""
        res = self.zfs("get", "-H", "-s", "local,received", "-o", "property,source", "all", name)
        return [
            (row[0], row[1])
            for row in _rows(res.stdout)
            if len(row) >= 2 and row[0].startswith(prefix)
        ]

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
