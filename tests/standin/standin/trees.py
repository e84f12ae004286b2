"""Live directory trees and manifests: scan a mountpoint into `{relpath: entry}`, and
rewrite a mountpoint to equal a snapshot's manifest."""

import errno
import os
import stat

from .fileio import preallocate
from .lazy import Lazy
from .state import CHUNK, Host

contextlib = Lazy("contextlib", globals())
shutil = Lazy("shutil", globals())


def scan_tree(host: Host, top: str, exclude: set, store: bool) -> dict:
    """Manifest of a live directory: relpath -> ["f", sha, mode, size] | ["d", mode] |
    ["l", target]."""
    out = {}
    if not os.path.isdir(top):
        return out
    stack = [("", top)]
    while stack:
        rel, path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            continue
        for e in entries:
            r = rel + "/" + e.name if rel else e.name
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if e.path in exclude:
                    continue
                out[r] = ["d", stat.S_IMODE(st.st_mode)]
                stack.append((r, e.path))
            elif stat.S_ISLNK(st.st_mode):
                out[r] = ["l", os.readlink(e.path)]
            elif stat.S_ISREG(st.st_mode):
                sha = host.file_sha(e.path, st, store)
                out[r] = ["f", sha, stat.S_IMODE(st.st_mode), st.st_size]
    host.flush_cache()
    return out


def manifest_size(m: dict) -> int:
    return sum(e[3] for e in m.values() if e[0] == "f")


def _copy_obj(host: Host, sha: str, dest: str, mode: int) -> None:
    src = host.obj_path(sha)
    tmp = dest + ".zfs-standin-tmp"
    with open(src, "rb") as fs, open(tmp, "wb") as fd:
        try:
            total = os.fstat(fs.fileno()).st_size
            preallocate(fd.fileno(), total)
            done = 0
            while done < total:
                n = os.copy_file_range(fs.fileno(), fd.fileno(), total - done)
                if n == 0:
                    break
                done += n
            if done < total:
                raise OSError(errno.EIO, "short copy")
        except (AttributeError, OSError):
            fs.seek(0)
            fd.seek(0)
            fd.truncate()
            shutil.copyfileobj(fs, fd, CHUNK)
    os.chmod(tmp, mode)
    os.replace(tmp, dest)


def apply_manifest(
    host: Host, top: str, target: dict, exclude: set, prewritten: "dict | None" = None
) -> None:
    """Rewrite the live tree under `top` so that it equals `target`. `prewritten` maps sha to
    a temporary file with that content (written by the receive): moved into place instead of
    copied from the object store."""
    os.makedirs(top, exist_ok=True)
    live = scan_tree(host, top, exclude, store=False)
    # remove what is not wanted (deepest first)
    for rel in sorted(live, key=lambda r: r.count("/"), reverse=True):
        want = target.get(rel)
        have = live[rel]
        path = os.path.join(top, rel)
        if want is not None and want[0] == have[0]:
            continue
        if have[0] == "d":
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    for rel in sorted(target, key=lambda r: (r.count("/"), r)):
        want = target[rel]
        path = os.path.join(top, rel)
        have = live.get(rel)
        if want[0] == "d":
            if not os.path.isdir(path):
                os.makedirs(path, exist_ok=True)
            os.chmod(path, want[1])
        elif want[0] == "l":
            if have is not None and have == want and os.path.islink(path):
                continue
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(want[1], path)
        else:
            if have is not None and have[0] == "f" and have[1] == want[1]:
                if have[2] != want[2]:
                    os.chmod(path, want[2])
                continue
            pre = prewritten.pop(want[1], None) if prewritten else None
            placed = False
            if pre is not None:
                try:
                    os.chmod(pre, want[2])
                    os.replace(pre, path)
                    placed = True
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(pre)
            if not placed:
                _copy_obj(host, want[1], path, want[2])
            host.note_written(path, want[1])
    host.flush_cache()
    # directory modes last (a read-only directory would block its own content)
    for rel, want in target.items():
        if want[0] == "d":
            os.chmod(os.path.join(top, rel), want[1])
