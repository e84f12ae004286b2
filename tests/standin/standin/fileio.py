"""Reading and writing file contents: reads that leave atime alone, preallocation, sha256
objects that load OpenSSL only for enough data, and the side writer that stores and hashes
bytes (in a thread for a large object)."""

import os

from .lazy import Lazy
from .state import CHUNK

contextlib = Lazy("contextlib", globals())
hashlib = Lazy("hashlib", globals())
queue = Lazy("queue", globals())
threading = Lazy("threading", globals())


def open_noatime(path: str):
    """Open a live file for reading without touching its atime (see Model.atime_touched):
    the stand-in's own reads are not a user's. O_NOATIME needs the owner or root."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    return os.fdopen(fd, "rb")


def preallocate(fd: int, size: int) -> None:
    """Reserve blocks up front: on ext4 this makes large writes several times faster."""
    if size >= CHUNK:
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fallocate(fd, 0, size)


_BUILTIN_BUDGET = [256 << 10]  # bytes this process may hash with the built-in sha256


def sha256(size: int):
    """A sha256 object for `size` bytes. Loading OpenSSL (hashlib) costs a call ~2 ms, more
    than CPython's built-in sha256 takes for 256 KiB (it is ~6x slower per byte): the first
    256 KiB a call hashes go through the built-in one, the rest through OpenSSL. Same digest."""
    if size <= _BUILTIN_BUDGET[0]:
        try:
            from _sha256 import sha256 as builtin  # Python < 3.12
        except ImportError:
            try:
                from _sha2 import sha256 as builtin  # Python >= 3.12
            except ImportError:
                builtin = None
        if builtin is not None:
            _BUILTIN_BUDGET[0] -= size
            return builtin()
    return hashlib.sha256()


class SideWriter:
    """Writes the bytes of one object to a file of its own and hashes them: for a large one
    (a chunk or more) in a thread, so a receive writes its two copies (object store and live
    tree) in parallel instead of copying one into the other afterwards, and a snapshot stores
    a file while reading it. A small one is written as it comes: starting a thread (and
    importing threading and queue, ~3 ms) would cost more than it saves. Either way a write
    error is raised by close()."""

    def __init__(self, path: str, size: int):
        self.path = path
        self.f = open(path, "wb")  # noqa: SIM115 (closed in close())
        preallocate(self.f.fileno(), size)
        self.h = sha256(size)
        self.error = None
        self.t = None
        if size >= CHUNK:
            self.q: queue.Queue = queue.Queue(maxsize=16)
            self.t = threading.Thread(target=self._run, daemon=True)
            self.t.start()

    def _run(self) -> None:
        while True:
            b = self.q.get()
            if b is None:
                return
            self._write(b)

    def _write(self, b: bytes) -> None:
        if self.error is None:
            try:
                self.f.write(b)
                self.h.update(b)
            except OSError as e:
                self.error = e

    def put(self, b: bytes) -> None:
        if self.t is None:
            self._write(b)
        else:
            self.q.put(b)

    def close(self) -> str:
        if self.t is not None:
            self.q.put(None)
            self.t.join()
        self.f.close()
        if self.error is not None:
            raise self.error
        return self.h.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
