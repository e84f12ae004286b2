"""The send stream format: records, checksums, the per-snapshot sections that carry file
contents, their writer and reader, and receive resume tokens.

A stream is MAGIC then records: 4-byte tag, 8-byte big-endian length, payload.
  HEAD json  {sendfs, props, replicate, resume, package, fss (fs props, snapshot guids and
             snapshot props, for -p/-R)}
  per snapshot: SNAP json {toname, toguid, fromguid, fromname, creation, manifest (the full
                {relpath: entry} of the snapshot), objects ([sha256, size] of the contents the
                receiver cannot have: not in the from-snapshot), resume_obj, resume_off},
                then one DATA record per object (raw bytes, from resume_off for the first
                one of a resumed stream), then SEND json {"crc": crc32 of the section}
  END! json {"crc": crc32 of everything before END!, "sections": n}: only in "package"
             streams (-R, -I, -p), as OpenZFS ends those with an END record
A receiver commits each snapshot when its SEND trailer checks out; EOF anywhere before that
is a cut stream (with -s: partial state + resume token at object/offset granularity)."""

import fcntl
import os
import struct

from .lazy import Lazy, jdumps, jloads
from .model import Model
from .state import CHUNK, Host

contextlib = Lazy("contextlib", globals())
zlib = Lazy("zlib", globals())


MAGIC = b"ZFS-STANDIN-STREAM v1\n"
REC = struct.Struct(">4sQ")


def jdump(obj) -> bytes:
    return jdumps(obj, sort_keys=True, separators=(",", ":")).encode()


def section_plan(m: Model, fs: str, s: dict, from_s: "dict | None") -> dict:
    man = m.snap_manifest(s)
    base = set()
    if from_s is not None:
        base = {e[1] for e in m.snap_manifest(from_s).values() if e[0] == "f"}
    objs = []
    seen = set()
    for r in sorted(man):
        e = man[r]
        if e[0] == "f" and e[1] not in base and e[1] not in seen:
            seen.add(e[1])
            objs.append([e[1], e[3]])
    sec = {
        "toname": "%s@%s" % (fs, s["name"]),
        "toguid": s["guid"],
        "fromguid": from_s["guid"] if from_s else 0,
        "fromname": from_s["name"] if from_s else None,
        "creation": s["creation"],
        "fsguid": m.ds[fs]["guid"],
        "manifest": man,
        "objects": objs,
        "resume_obj": 0,
        "resume_off": 0,
    }
    if from_s is not None and from_s.get("bookmark"):
        sec["frombookmark"] = True  # nothing to hold: the base may be gone
    if from_s is not None and "ivset" in from_s:
        sec["fromivset"] = from_s["ivset"]  # a raw incremental names its base's IV set
    return sec


def section_size(sec: dict) -> int:
    n = REC.size + len(jdump(sec))
    for i, (_sha, size) in enumerate(sec["objects"]):
        if i < sec["resume_obj"]:
            continue
        off = sec["resume_off"] if i == sec["resume_obj"] else 0
        n += REC.size + size - off
    n += REC.size + len(jdump({"crc": "00000000"}))
    return n


class Writer:
    def __init__(self, fd: int):
        self.fd = fd
        widen_pipe(fd)
        self.crc = 0
        self.sec_crc = 0
        self.sec_bytes = 0
        self.total = 0

    def write(self, b, data: bool = False) -> None:
        mv = memoryview(b)
        while mv:
            n = os.write(self.fd, mv)
            mv = mv[n:]
        # the stream crc covers everything but file data, which the section crc (carried in
        # each SEND trailer, itself covered) already covers: one checksum pass per byte
        if not data:
            self.crc = zlib.crc32(b, self.crc)
        self.sec_crc = zlib.crc32(b, self.sec_crc)
        self.sec_bytes += len(b)
        self.total += len(b)

    def record(self, tag: bytes, payload: bytes) -> None:
        self.write(REC.pack(tag, len(payload)) + payload)


def emit_section(host: Host, w: Writer, sec: dict) -> None:
    w.sec_crc = 0
    w.sec_bytes = 0
    w.record(b"SNAP", jdump(sec))
    for i, (sha, size) in enumerate(sec["objects"]):
        if i < sec["resume_obj"]:
            continue
        off = sec["resume_off"] if i == sec["resume_obj"] else 0
        w.write(REC.pack(b"DATA", size - off))
        with open(host.obj_path(sha), "rb") as f:
            if off:
                f.seek(off)
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                w.write(b, data=True)
    w.record(b"SEND", jdump({"crc": "%08x" % w.sec_crc}))


def token_encode(payload: dict) -> str:
    raw = jdump(payload)
    comp = zlib.compress(raw)
    ck = zlib.crc32(comp) & 0xFFFFFFFF
    return "1-%x-%x-%s" % (ck, len(raw), comp.hex())


def token_decode(token: str):
    """(payload, None) or (None, libzfs's complaint), checked in zfs_send_resume_token_to_nvlist()
    order."""
    parts = token.split("-", 3)
    try:
        version = int(parts[0])
        ck = int(parts[1], 16)
        ln = int(parts[2], 16)
        if len(parts) != 4:
            raise ValueError
    except (ValueError, IndexError):
        return None, "resume token is corrupt (invalid format)"
    if version != 1:
        return None, "resume token is corrupt (invalid version %u)" % version
    try:
        comp = bytes.fromhex(parts[3])
    except ValueError:
        return None, "resume token is corrupt (payload is not hex-encoded)"
    if zlib.crc32(comp) & 0xFFFFFFFF != ck:
        return None, "resume token is corrupt (incorrect checksum)"
    try:
        raw = zlib.decompress(comp)
    except zlib.error:
        raw = b""
    if len(raw) != ln:
        return None, "resume token is corrupt (decompression failed)"
    try:
        return jloads(raw), None
    except ValueError:
        return None, "resume token is corrupt (nvlist_unpack failed)"


class Truncated(Exception):
    pass


class Reader:
    def __init__(self, fd: int):
        self.fd = fd
        widen_pipe(fd)
        self.crc = 0
        self.sec_crc = 0
        self.total = 0

    def read_exact(self, n: int) -> bytes:
        parts = []
        left = n
        while left:
            b = os.read(self.fd, min(left, CHUNK))
            if not b:
                raise Truncated()
            parts.append(b)
            left -= len(b)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        self.crc = zlib.crc32(data, self.crc)
        self.sec_crc = zlib.crc32(data, self.sec_crc)
        self.total += n
        return data

    def record(self, want: "bytes | None" = None):
        hdr = self.read_exact(REC.size)
        tag, ln = REC.unpack(hdr)
        if want is not None and tag != want:
            raise ValueError("unexpected record %r" % tag)
        if tag == b"DATA":
            return tag, ln
        return tag, self.read_exact(ln)


def widen_pipe(fd: int) -> None:
    """Fewer, larger reads and writes through the pipe between send and recv."""
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
