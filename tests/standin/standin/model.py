"""The loaded state of one host: pools, filesystems, snapshots and their content
directories (`Model`), and `Session`, which locks, loads and saves it around a command."""

import bisect
import os
import stat
import time

from .errors import Exit, fail
from .lazy import Lazy
from .names import name_problem
from .properties import Properties
from .state import Host

contextlib = Lazy("contextlib", globals())
errno = Lazy("errno", globals())
shutil = Lazy("shutil", globals())
trees = Lazy(".trees", globals())
crypt = Lazy(".crypt", globals())
deleg = Lazy(".deleg", globals())

# The stand-in runs as its caller, like the zfs command: root may do anything; anyone else
# only what `zfs allow` delegated to them (deleg.py), and never mount (Linux).
PRIVILEGED = os.geteuid() == 0


class Model(Properties):
    """Operations on a loaded state dict."""

    def __init__(self, host: Host, st: dict):
        self.host = host
        self.st = st
        self._live_cache = {}
        self._children_memo = None
        self._sorted_names: list = []
        self._sorted_dirs: list = []

    def freeze(self) -> None:
        """The state will not change any more (a read-only session): remember the tree's
        derived facts (children, space) instead of recomputing them per dataset."""
        self._children_memo = {}
        self._used_memo = {}
        self._sorted_names = sorted(self.ds)
        self._sorted_dirs = sorted(d["dir"] for d in self.ds.values() if d.get("dir"))

    # -- basic lookups
    @property
    def ds(self) -> dict:
        return self.st["ds"]

    def next_txg(self) -> int:
        self.st["txg"] += 1
        return self.st["txg"]

    def exists(self, name: str) -> bool:
        if "@" in name:
            fs, _, sn = name.partition("@")
            d = self.ds.get(fs)
            return d is not None and self.find_snap(d, sn) is not None
        if "#" in name:
            return self.bookmark(name)[1] is not None
        return name in self.ds

    def bookmark(self, name: str):
        """(filesystem dict, bookmark dict) of `fs#bm`; either may be None."""
        fs, _, bm = name.partition("#")
        d = self.ds.get(fs)
        if d is None:
            return None, None
        return d, (d.get("bookmarks") or {}).get(bm)

    def find_snap(self, d: dict, sn: str):
        for s in d["snaps"]:
            if s["name"] == sn:
                return s
        return None

    def snap(self, name: str):
        fs, _, sn = name.partition("@")
        d = self.ds.get(fs)
        if d is None:
            return None, None
        return d, self.find_snap(d, sn)

    def children(self, name: str, recursive: bool = True) -> list:
        memo = self._children_memo
        if memo is not None:
            key = (name, recursive)
            if key not in memo:
                memo[key] = self._children(name, recursive)
            return list(memo[key])
        return self._children(name, recursive)

    def _children(self, name: str, recursive: bool) -> list:
        pre = name + "/"
        if self._children_memo is not None:  # frozen: the names below, found in sorted order
            out = _prefixed(self._sorted_names, pre)
        else:
            out = [n for n in self.ds if n.startswith(pre)]
        if not recursive:
            out = [n for n in out if "/" not in n[len(pre) :]]
        return sorted(out)

    def open(self, name: str, types=("filesystem", "snapshot", "volume")) -> None:
        """Validate like zfs_open(); raise with OpenZFS's message when it fails."""
        prob = name_problem(name, "snapshot" in types, allow_bookmark="bookmark" in types)
        if prob:
            raise fail("cannot open '%s': %s" % (name, prob))
        if not self.exists(name):
            if "#" in name:  # a bookmark is looked up by the kernel: ENOENT's wording
                raise fail("cannot open '%s': no such pool or dataset" % name)
            raise fail("cannot open '%s': dataset does not exist" % name)
        kind = "snapshot" if "@" in name else "bookmark" if "#" in name else "filesystem"
        if kind not in types:
            raise fail("cannot open '%s': operation not applicable to datasets of this type" % name)

    def guid_new(self) -> int:
        while True:
            g = int.from_bytes(os.urandom(8), "big")
            if g:
                return g

    # -- dataset creation
    def new_fs(self, name: str, local: "dict | None" = None, creation: "int | None" = None):
        d = {
            "type": "filesystem",
            "guid": self.guid_new(),
            "createtxg": self.next_txg(),
            "creation": int(time.time()) if creation is None else creation,
            "local": dict(local or {}),
            "received": {},
            "mask": [],
            "mounted": True,
            "snaps": [],
            "partial": None,
            "inconsistent": False,
            "dir": None,
        }
        self.ds[name] = d
        d["dir"] = self.alloc_dir(name)
        os.makedirs(d["dir"], exist_ok=True)
        return d

    # -- content directories
    def default_mountpoint(self, name: str) -> str:
        return os.path.join(self.host.mntdir, name)

    def alloc_dir(self, name: str) -> str:
        want = self.desired_dir(name)
        if want is not None and self.dir_free(want, name):
            return want
        return os.path.join(self.host.nomount, name)

    def desired_dir(self, name: str) -> "str | None":
        if "crypt" in self.ds[name] and not crypt.key_loaded(self, name):
            return None  # no key: nothing of it is readable where it would be mounted
        mp, _src, _ = self.get_prop(name, "mountpoint")
        if not mp.startswith("/"):
            return None
        mp = os.path.normpath(mp)
        # never point into another stand-in host's state directory
        p = mp
        while True:
            if os.path.exists(os.path.join(p, ".zfs_standin_root")) and os.path.abspath(
                p
            ) != os.path.abspath(self.host.root):
                return None
            np = os.path.dirname(p)
            if np == p:
                break
            p = np
        return mp

    def dir_free(self, path: str, owner: str) -> bool:
        return all(n == owner or d.get("dir") != path for n, d in self.ds.items())

    def content_dir(self, name: str) -> str:
        return self.ds[name]["dir"]

    def exclude_for(self, name: str) -> set:
        top = self.ds[name]["dir"]
        if self._children_memo is not None:  # frozen: as below, without a walk per dataset
            return set(_prefixed(self._sorted_dirs, top + "/"))
        ex = set()
        for n, d in self.ds.items():
            if n != name and d.get("dir") and d["dir"].startswith(top + "/"):
                ex.add(d["dir"])
        return ex

    def relocate_dirs(self) -> None:
        """Move content directories after mountpoint changes."""
        for name in sorted(self.ds):
            d = self.ds[name]
            want = self.desired_dir(name)
            if want is None:
                want = os.path.join(self.host.nomount, name)
            cur = d["dir"]
            if cur == want or not self.dir_free(want, name):
                continue
            if os.path.isdir(want) and os.listdir(want):
                # only the mountpoints of datasets below it there (a child that stayed
                # visible while this one was hidden without its key): move in around them
                if not self._only_mounts_in(want) or not os.path.isdir(cur):
                    continue
                _merge_dir(cur, want)
            else:
                if os.path.isdir(want):
                    os.rmdir(want)
                os.makedirs(os.path.dirname(want), exist_ok=True)
                if os.path.isdir(cur):
                    _move(cur, want)
                else:
                    os.makedirs(want, exist_ok=True)
            d["dir"] = want
            for n2, d2 in self.ds.items():
                if n2 != name and d2.get("dir", "").startswith(cur + "/"):
                    d2["dir"] = want + d2["dir"][len(cur) :]

    def _only_mounts_in(self, path: str) -> bool:
        dirs = [d2.get("dir") or "" for d2 in self.ds.values()]
        for e in os.listdir(path):
            p = os.path.join(path, e)
            if not any(x == p or x.startswith(p + "/") for x in dirs):
                return False
        return True

    # -- live content
    def live(self, name: str, store: bool = False) -> dict:
        key = (name, store)
        if key not in self._live_cache:
            self._live_cache[key] = trees.scan_tree(
                self.host, self.ds[name]["dir"], self.exclude_for(name), store
            )
            if store:
                self._live_cache[(name, False)] = self._live_cache[key]
        return self._live_cache[key]

    def snap_manifest(self, s: dict) -> dict:
        return self.host.get_manifest(s["manifest"])

    def modified_since(self, name: str, s: "dict | None") -> bool:
        base = self.snap_manifest(s) if s else {}
        return self.live(name) != base or self.atime_touched(name)

    def mark_quiet(self, name: str) -> None:
        """The live tree was just snapshotted or written by us: reads after this count."""
        self.ds[name]["quiet"] = time.time_ns()

    def atime_touched(self, name: str) -> bool:
        """OpenZFS writes a file's atime when it is read (relatime: if the atime is not
        newer than the mtime), and that write dirties the filesystem: the next incremental
        receive without -F is refused as "modified". Not with atime=off or readonly=on.
        The stand-in sees reads through the host's own atime (its own reads use O_NOATIME;
        on a host mounted noatime it sees none). Directory reads are not modelled."""
        d = self.ds[name]
        quiet = d.get("quiet")
        if quiet is None or not os.path.isdir(d["dir"]):
            return False
        if self.get_prop(name, "atime")[0] != "on" or self.get_prop(name, "readonly")[0] == "on":
            return False
        exclude = self.exclude_for(name)
        stack = [d["dir"]]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except FileNotFoundError:
                continue
            for e in entries:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if e.path not in exclude:
                        stack.append(e.path)
                elif stat.S_ISREG(st.st_mode) and st.st_atime_ns > max(st.st_mtime_ns, quiet):
                    return True
        return False

    def obj(self, name: str) -> dict:
        if "@" in name:
            return self.snap(name)[1]
        if "#" in name:
            return self.bookmark(name)[1]
        return self.ds[name]

    # -- mounting (Linux lets only root mount)
    def mount_refused(self, name: str) -> str:
        """libzfs's message when a caller that is not root mounts `name`: mount(2) refuses
        (EPERM), or, for a filesystem never mounted, creating its mountpoint does."""
        if self.ds[name].get("was_mounted", True):
            return "cannot mount '%s': Insufficient privileges" % name
        return ("cannot mount '%s': failed to create mountpoint: Permission denied"
                % self.get_prop(name, "mountpoint")[0])  # fmt: skip

    def unmount_refused(self, name: str) -> str:
        return "cannot unmount '%s': permission denied" % self.get_prop(name, "mountpoint")[0]

    # -- delegation
    def may(self, name: str, *perms: str) -> bool:
        """Whether the caller holds every permission on `name` (root holds all)."""
        return PRIVILEGED or all(deleg.allowed(self, name, p) for p in perms)

    def drop_stale_send_holds(self) -> None:
        for d in self.ds.values():
            for s in d["snaps"]:
                for tag in [t for t in s["holds"] if t.startswith(".send-")]:
                    try:
                        pid = int(tag.split("-")[1])
                        os.kill(pid, 0)
                    except (ValueError, IndexError, ProcessLookupError):
                        del s["holds"][tag]
                    except PermissionError:
                        pass

    # -- destroy helpers
    def remove_fs(self, name: str) -> None:
        d = self.ds.pop(name)
        top = d["dir"]
        keep = set()
        for d2 in self.ds.values():
            if d2.get("dir", "").startswith(top + "/"):
                keep.add(d2["dir"])
        if os.path.isdir(top):
            if not keep:
                shutil.rmtree(top, ignore_errors=True)
            else:
                _rmtree_except(top, keep)
        self._drop_partial_files(d)

    def _drop_partial_files(self, d: dict) -> None:
        p = d.get("partial")
        if p and p.get("stage"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.host.partdir, p["stage"]))


def _move(src: str, dest: str) -> None:
    """Move `src` (a content directory, or an entry of one) to `dest`, which does not exist.

    A rename when both are on one filesystem. A mountpoint may be on another one (OpenZFS
    just mounts the dataset there): then copy the tree keeping what a remount keeps (modes,
    times, owners, symlinks as links, extended attributes) and remove `src`. Hard links
    between files become copies (the stand-in's content is compared by name and content)."""
    try:
        os.rename(src, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.copytree(src, dest, symlinks=True, copy_function=shutil.copy2)
        for top, dirs, files in os.walk(src):
            for n in [None, *dirs, *files]:
                a = top if n is None else os.path.join(top, n)
                st = os.lstat(a)
                os.lchown(os.path.join(dest, os.path.relpath(a, src)), st.st_uid, st.st_gid)
        shutil.rmtree(src)
    else:
        st = os.lstat(src)
        shutil.copy2(src, dest, follow_symlinks=False)
        os.lchown(dest, st.st_uid, st.st_gid)
        os.unlink(src)


def _merge_dir(src: str, dest: str) -> None:
    """Move the entries of `src` into `dest` (which holds only other datasets' mountpoints;
    an empty directory of `src` in the way of one is dropped), then remove `src`."""
    for e in os.listdir(src):
        a, b = os.path.join(src, e), os.path.join(dest, e)
        if not os.path.lexists(b):
            _move(a, b)
        elif os.path.isdir(a) and not os.path.islink(a) and not os.listdir(a):
            os.rmdir(a)
    with contextlib.suppress(OSError):
        os.rmdir(src)


def _rmtree_except(top: str, keep: set) -> None:
    for entry in os.scandir(top):
        if entry.path in keep:
            continue
        if any(k.startswith(entry.path + "/") for k in keep):
            if entry.is_dir(follow_symlinks=False):
                _rmtree_except(entry.path, keep)
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


class Session:
    """Lock + load; commit saves. Use as a context manager."""

    def __init__(self, host: Host, write: bool = True):
        self.host = host
        self.write = write

    def __enter__(self) -> Model:
        self.host.lock()
        self.model = Model(self.host, self.host.load())
        self.model.drop_stale_send_holds()
        if not self.write:
            self.model.freeze()
        return self.model

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.write and (exc_type is None or issubclass(exc_type, Exit)):
                self.host.save(self.model.st)
        finally:
            self.host.unlock()
        return False


def _prefixed(ordered: list, prefix: str) -> list:
    """The strings of sorted `ordered` that start with `prefix`, in order (a read-only
    session's lookups: a `zfs get all` over n datasets was O(n^2) in the stand-in, where
    OpenZFS walks each dataset's own children)."""
    lo = bisect.bisect_left(ordered, prefix)
    hi = bisect.bisect_left(ordered, prefix + "\U0010ffff")
    return ordered[lo:hi]
