"""Reading and writing file contents: reads that leave atime alone, preallocation, and the
side writer that stores and hashes received bytes in a thread."""

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


class SideWriter:
    """Writes the received bytes of one object to a second file and hashes them, in a thread:
    a receive needs two copies (object store and live tree) and this writes them in
    parallel instead of copying one into the other afterwards."""

    def __init__(self, path: str, size: int):
        self.path = path
        self.f = open(path, "wb")  # noqa: SIM115 (closed in close())
        preallocate(self.f.fileno(), size)
        self.h = hashlib.sha256()
        self.q: queue.Queue = queue.Queue(maxsize=16)
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            b = self.q.get()
            if b is None:
                return
            if self.error is None:
                try:
                    self.f.write(b)
                    self.h.update(b)
                except OSError as e:
                    self.error = e

    def put(self, b: bytes) -> None:
        self.q.put(b)

    def close(self) -> str:
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
