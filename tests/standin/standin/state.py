"""One host's state directory (ZFS_STANDIN_ROOT): the flock, state.json, the content-
addressed objects and manifests, and the cache of file hashes."""

import fcntl
import os
import time

from .errors import fail
from .lazy import Lazy, jdumps, jloads

fileio = Lazy(".fileio", globals())

CHUNK = 1 << 20  # every read and write of file contents (objects, streams, live files)


class Host:
    """One host's state directory."""

    def __init__(self, root: str):
        self.root = root
        self.state_path = os.path.join(root, "state.json")
        self.lock_path = os.path.join(root, "state.lock")
        self.objdir = os.path.join(root, "objects")
        self.mandir = os.path.join(root, "manifests")
        self.partdir = os.path.join(root, "partial")
        self.tmpdir = os.path.join(root, "tmp")
        self.nomount = os.path.join(root, ".nomount")
        self.mntdir = os.path.join(root, "mnt")
        self._lockfd = None
        self._hashcache = None
        self._hashcache_dirty = False
        self._saved = None  # state.json's text as loaded or last saved
        for d in (root, self.objdir, self.mandir, self.partdir, self.tmpdir, self.mntdir):
            if not os.path.isdir(d):  # one stat; makedirs(exist_ok) costs an exception each
                os.makedirs(d, exist_ok=True)
        marker = os.path.join(root, ".zfs_standin_root")
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write("zfs stand-in state root\n")

    # -- locking
    def lock(self):
        if self._lockfd is None:
            self._lockfd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self._lockfd, fcntl.LOCK_EX)

    def unlock(self):
        if self._lockfd is not None:
            fcntl.flock(self._lockfd, fcntl.LOCK_UN)
            os.close(self._lockfd)
            self._lockfd = None

    def load(self) -> dict:
        try:
            with open(self.state_path) as f:
                text = f.read()
        except FileNotFoundError:
            self._saved = None
            return {"version": 1, "txg": 1, "pools": {}, "ds": {}}
        self._saved = text
        return jloads(text)

    def save(self, st: dict) -> None:
        # json.dumps, not json.dump: dump streams through the pure-Python encoder (~10x slower)
        text = jdumps(st, sort_keys=True, separators=(",", ":"))
        if text == self._saved:
            return  # nothing changed (a refused hold, a set to the same value): no rewrite
        tmp = "%s.tmp.%d" % (self.state_path, os.getpid())
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.state_path)
        self._saved = text

    # -- objects
    def obj_path(self, sha: str) -> str:
        return os.path.join(self.objdir, sha[:2], sha[2:])

    def has_obj(self, sha: str) -> bool:
        return os.path.exists(self.obj_path(sha))

    def tmpfile(self) -> str:
        return os.path.join(self.tmpdir, "%d.%s" % (os.getpid(), os.urandom(8).hex()))

    def commit_obj(self, tmp: str, sha: str) -> None:
        dest = self.obj_path(sha)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.exists(dest):
            os.unlink(tmp)
            return
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)

    def put_manifest(self, manifest: dict) -> str:
        data = jdumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        h = fileio.sha256(len(data))
        h.update(data)
        mid = h.hexdigest()
        path = os.path.join(self.mandir, mid)
        if not os.path.exists(path):
            tmp = self.tmpfile()
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return mid

    def get_manifest(self, mid: str) -> dict:
        if not mid:
            return {}
        with open(os.path.join(self.mandir, mid), "rb") as f:
            return jloads(f.read())

    # -- hash cache
    def _cache(self) -> dict:
        if self._hashcache is None:
            try:
                with open(os.path.join(self.root, "hashcache.json")) as f:
                    self._hashcache = jloads(f.read())
            except (FileNotFoundError, ValueError):
                self._hashcache = {}
        return self._hashcache

    def flush_cache(self) -> None:
        if self._hashcache_dirty and self._hashcache is not None:
            path = os.path.join(self.root, "hashcache.json")
            tmp = self.tmpfile()
            with open(tmp, "w") as f:
                f.write(jdumps(self._hashcache))
            os.replace(tmp, path)
            self._hashcache_dirty = False

    def note_written(self, path: str, sha: str) -> None:
        """Cache the hash of a file this process just wrote from a known object. No other
        process can have changed it within the same timestamp tick, so it is trusted at
        once (entries for files written by others: see `trust_margin`)."""
        st = os.lstat(path)
        self._cache()[path] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, sha,
                               st.st_ctime_ns + 2_000_000_000]  # fmt: skip
        self._hashcache_dirty = True

    def file_sha(self, path: str, st: os.stat_result, store: bool) -> str:
        """sha256 of a live file; with store=True make sure the object exists."""
        cache = self._cache()
        key = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        ent = cache.get(path)
        if ent and ent[:4] == key and ent[4] and ent[5] - trust_margin(st) > st.st_ctime_ns:
            sha = ent[4]
            if not store or self.has_obj(sha):
                return sha
        if store:
            side = fileio.SideWriter(self.tmpfile(), st.st_size)  # copy + hash while this reads
            try:
                with fileio.open_noatime(path) as src:
                    while True:
                        b = src.read(CHUNK)
                        if not b:
                            break
                        side.put(b)
            except BaseException:
                side.discard()
                raise
            sha = side.close()
            self.commit_obj(side.path, sha)
        else:
            h = fileio.sha256(st.st_size)
            with fileio.open_noatime(path) as src:
                while True:
                    b = src.read(CHUNK)
                    if not b:
                        break
                    h.update(b)
            sha = h.hexdigest()
        now = time.time_ns()
        st2 = os.lstat(path)
        if [st2.st_size, st2.st_mtime_ns, st2.st_ino, st2.st_ctime_ns] == key:
            cache[path] = [*key, sha, now]
            self._hashcache_dirty = True
        return sha


def trust_margin(st: os.stat_result) -> int:
    """How long after a file's ctime its hash must have been taken to be trusted (ns). A
    write in the same timestamp tick as the hashed one would leave size, mtime and ctime
    unchanged; Linux stamps files from the coarse clock (a tick is 1-10 ms), so 50 ms is
    safe; a filesystem with whole-second timestamps (no sub-second part) gets 1 s. It was
    1 s for all: every call within a second of writing a large file re-hashed it (0.6 s
    per `zfs get written` for 1 GiB), which a real pool never pays."""
    return 1_000_000_000 if st.st_ctime_ns % 1_000_000_000 == 0 else 50_000_000


def get_host() -> Host:
    root = os.environ.get("ZFS_STANDIN_ROOT")
    if not root:
        raise fail(
            "zfs stand-in: ZFS_STANDIN_ROOT is not set (it names the directory that holds "
            "this host's pools and datasets)"
        )
    return Host(os.path.abspath(root))
