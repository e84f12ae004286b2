#!/usr/bin/env python3
"""A faithful stand-in for the OpenZFS `zfs` and `zpool` commands, for tests.

Dispatches on the name it was invoked by (argv[0] basename `zfs` or `zpool`), or on
`standin.py zfs ...` / `standin.py zpool ...`. Standard library only; runs on any
Python >= 3.8 (including the Debian system python that sshd starts).

State lives per "host" in the directory named by $ZFS_STANDIN_ROOT:

    state.json       metadata (pools, datasets, snapshots, properties, holds, partial
                     receive state), guarded by flock on state.lock
    objects/         file contents, content-addressed by sha256 (immutable)
    manifests/       snapshot manifests {relpath: entry}, content-addressed
    partial/         bytes of a partially received object (`zfs receive -s`)
    hashcache.json   sha256 cache keyed by path, validated by (size, mtime_ns, ino, ctime_ns)
    calls.log        one JSON line per invocation {"argv", "pid", "t"}
    mnt/<dataset>    default mountpoint of each filesystem: its files ARE the live content

What it models (as strictly as OpenZFS 2.1/2.3, with their messages and exit codes):
  pools and filesystems, snapshots (atomic, -r), guids (snapshot guids kept by receive),
  createtxg ordering, creation times; native and user properties with local / received /
  inherited / default sources, `$inherit` masking of received values (`zfs inherit`,
  `inherit -S`, `recv -x`, `recv -o`); holds blocking destroy and rollback; rename;
  rollback -r/-R; destroy -r/-R with OpenZFS's refusal listings; get/list output formats;
  `zfs diff`; send streams (full, -i, -I, -R, -p, -t resume, -n/-v/-P output and progress)
  carrying real file content; receive with all of OpenZFS's refusal rules (incremental
  base, modified destination, -F rollback and destruction of newer snapshots, full into
  existing, partial `-s` state and resume tokens, `-A`), cut streams detected by a trailer.

What it deliberately does not model:
  volumes, clones/promote, bookmarks, encryption keys, quotas/reservations enforcement,
  compression (the property is stored only), space accounting beyond file sizes
  (`used`/`available` are simple sums; metadata and block rounding are ignored),
  `readonly=on` does not stop writes made directly into the mountpoint directory
  (nothing can stop root), unmounting does not hide content (the directory keeps its
  files; `mounted` is a flag), file ownership/xattrs/ACLs/hard links (only regular
  files, directories, symlinks and mode bits are snapshotted), delegation (allow),
  `zfs send` of a filesystem (not a snapshot), and object garbage collection.
"""

# OpenZFS messages are kept in their C printf form so they can be compared with libzfs:
# ruff: noqa: UP031
from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import sys
import time


class _Lazy:
    """A module imported at its first use. Every zfs call is a new process, and most (get,
    set, hold) need none of these: importing them all took more than half of a `zfs get`'s
    own run time (json pulls in re, hashlib OpenSSL, shutil bz2/lzma, contextlib collections)."""

    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        mod = __import__(self._name)
        globals()[self._name] = mod  # later uses go straight to the module
        return getattr(mod, attr)


contextlib = _Lazy("contextlib")
hashlib = _Lazy("hashlib")
json = _Lazy("json")
queue = _Lazy("queue")
shutil = _Lazy("shutil")
signal = _Lazy("signal")
threading = _Lazy("threading")
zlib = _Lazy("zlib")


def _fast_json():
    """(loads, dumps) on the C accelerator `_json` directly, without importing `json` (and
    with it `re`). Byte for byte what json.loads / json.dumps give (checked here; anything
    unexpected falls back to the json module, which also reports every parse error)."""
    try:
        import _json

        class _Ctx:
            strict = True
            object_hook = None
            object_pairs_hook = None
            parse_float = float
            parse_int = int
            parse_constant = {
                "-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")
            }.__getitem__  # fmt: skip
            memo: dict = {}

        scan = _json.make_scanner(_Ctx())

        def default(o):
            raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)

        encoders = {}

        def dumps(obj, sort_keys: bool = False, separators=(", ", ": ")) -> str:
            key = (sort_keys, separators)
            enc = encoders.get(key)
            if enc is None:
                enc = encoders[key] = _json.make_encoder(
                    {}, default, _json.encode_basestring_ascii, None, separators[1],
                    separators[0], sort_keys, False, True,
                )  # fmt: skip
            return "".join(enc(obj, 0))

        ws = " \t\n\r"

        def loads(text):
            if isinstance(text, (bytes, bytearray)):
                text = text.decode("utf-8")
            i = len(text) - len(text.lstrip(ws))
            try:
                obj, end = scan(text, i)
            except StopIteration:
                return json.loads(text)  # raises the json module's error
            if text[end:].strip(ws):
                return json.loads(text)
            return obj

        sample = {"b": [1, 2.5, "x\u00e9\n", True, None], "a": {}}
        want = '{"a":{},"b":[1,2.5,"x\\u00e9\\n",true,null]}'
        if dumps(sample, True, (",", ":")) != want or loads(want) != sample:
            raise ValueError("unexpected _json behaviour")
        return loads, dumps
    except Exception:  # any surprise: the plain json module

        def loads(text):
            return json.loads(text)

        def dumps(obj, sort_keys: bool = False, separators=(", ", ": ")) -> str:
            return json.dumps(obj, sort_keys=sort_keys, separators=separators)

        return loads, dumps


jloads, jdumps = _fast_json()

CHUNK = 1 << 20
STANDIN_VERSION_DEFAULT = "2.1.16"


# ----------------------------------------------------------------------------- errors


class Exit(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def err(msg: str) -> None:
    sys.stderr.write(msg if msg.endswith("\n") else msg + "\n")
    sys.stderr.flush()


def fail(msg: str, code: int = 1) -> Exit:
    err(msg)
    return Exit(code)


def zversion() -> tuple:
    raw = os.environ.get("ZFS_STANDIN_VERSION", STANDIN_VERSION_DEFAULT)
    parts = []
    for p in raw.split("."):
        try:
            parts.append(int(p))
        except ValueError:
            parts.append(0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts[:3])


# ----------------------------------------------------------------------------- usage

ZFS_USAGE = {
    "version": "\tversion [-j]\n",
    "create": "\tcreate [-Pnpuv] [-o property=value] ... <filesystem>\n"
    "\tcreate [-Pnpsv] [-b blocksize] [-o property=value] ... -V <size> <volume>\n",
    "destroy": "\tdestroy [-fnpRrv] <filesystem|volume>\n"
    "\tdestroy [-dnpRrv] <filesystem|volume>@<snap>[%<snap>][,...]\n"
    "\tdestroy <filesystem|volume>#<bookmark>\n",
    "snapshot": "\tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...\n",
    "rollback": "\trollback [-rRf] <snapshot>\n",
    "clone": "\tclone [-p] [-o property=value] ... <snapshot> <filesystem|volume>\n",
    "promote": "\tpromote <clone-filesystem>\n",
    "rename": "\trename [-f] <filesystem|volume|snapshot> <filesystem|volume|snapshot>\n"
    "\trename -p [-f] <filesystem|volume> <filesystem|volume>\n"
    "\trename -u [-f] <filesystem> <filesystem>\n"
    "\trename -r <snapshot> <snapshot>\n",
    "bookmark": "\tbookmark <snapshot|bookmark> <newbookmark>\n",
    "diff": "\tdiff [-FHth] <snapshot> [snapshot|filesystem]\n",
    "list": "\tlist [-Hp] [-j [--json-int]] [-r|-d max] [-o property[,...]] [-s property]...\n"
    "\t    [-S property]... [-t type[,...]] [filesystem|volume|snapshot] ...\n",
    "set": "\tset [-u] <property=value> ... <filesystem|volume|snapshot> ...\n",
    "get": '\tget [-rHp] [-j [--json-int]] [-d max] [-o "all" | field[,...]]\n'
    "\t    [-t type[,...]] [-s source[,...]]\n"
    '\t    <"all" | property[,...]> [filesystem|volume|snapshot|bookmark] ...\n',
    "inherit": "\tinherit [-rS] <property> <filesystem|volume|snapshot> ...\n",
    "upgrade": "\tupgrade [-v]\n\tupgrade [-r] [-V version] <-a | filesystem ...>\n",
    "userspace": "\tuserspace [-Hinp] [-o field[,...]] [-s field] ...\n"
    "\t    [-S field] ... [-t type[,...]] <filesystem|snapshot|path>\n",
    "groupspace": "\tgroupspace [-Hinp] [-o field[,...]] [-s field] ...\n"
    "\t    [-S field] ... [-t type[,...]] <filesystem|snapshot|path>\n",
    "projectspace": "\tprojectspace [-Hp] [-o field[,...]] [-s field] ... \n"
    "\t    [-S field] ... <filesystem|snapshot|path>\n",
    "project": "\tproject [-d|-r] <directory|file ...>\n"
    "\tproject -c [-0] [-d|-r] [-p id] <directory|file ...>\n"
    "\tproject -C [-k] [-r] <directory ...>\n"
    "\tproject [-p id] [-r] [-s] <directory ...>\n",
    "mount": "\tmount [-j]\n\tmount [-flvO] [-o opts] <-a|-R filesystem|filesystem>\n",
    "unmount": "\tunmount [-fu] <-a | filesystem|mountpoint>\n",
    "share": "\tshare [-l] <-a [nfs|smb] | filesystem>\n",
    "unshare": "\tunshare <-a [nfs|smb] | filesystem|mountpoint>\n",
    "send": "\tsend [-DLPbcehnpsVvw] [-i|-I snapshot]\n"
    "\t     [-R [-X dataset[,dataset]...]]     <snapshot>\n"
    "\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>\n"
    "\tsend [-DnPpVvLec] [-i bookmark|snapshot] --redact <bookmark> <snapshot>\n"
    "\tsend [-nVvPe] -t <receive_resume_token>\n"
    "\tsend [-PnVv] --saved filesystem\n",
    "receive": "\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...\n"
    "\t    <filesystem|volume|snapshot>\n"
    "\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ... \n"
    "\t    [-d | -e] <filesystem>\n"
    "\treceive -A <filesystem|volume>\n",
    "redact": "\tredact <snapshot> <bookmark> <redaction_snapshot> ...\n",
    "allow": "\tallow <filesystem|volume>\n"
    '\tallow [-ldug] <"everyone"|user|group>[,...] <perm|@setname>[,...]\n'
    "\t    <filesystem|volume>\n"
    "\tallow [-ld] -e <perm|@setname>[,...] <filesystem|volume>\n"
    "\tallow -c <perm|@setname>[,...] <filesystem|volume>\n"
    "\tallow -s @setname <perm|@setname>[,...] <filesystem|volume>\n",
    "unallow": '\tunallow [-rldug] <"everyone"|user|group>[,...]\n'
    "\t    [<perm|@setname>[,...]] <filesystem|volume>\n"
    "\tunallow [-rld] -e [<perm|@setname>[,...]] <filesystem|volume>\n"
    "\tunallow [-r] -c [<perm|@setname>[,...]] <filesystem|volume>\n"
    "\tunallow [-r] -s @setname [<perm|@setname>[,...]] <filesystem|volume>\n",
    "hold": "\thold [-r] <tag> <snapshot> ...\n",
    "holds": "\tholds [-rHp] <snapshot> ...\n",
    "release": "\trelease [-r] <tag> <snapshot> ...\n",
    "load-key": "\tload-key [-rn] [-L <keylocation>] <-a | filesystem|volume>\n",
    "unload-key": "\tunload-key [-r] <-a | filesystem|volume>\n",
    "change-key": "\tchange-key [-l] [-o keyformat=<value>]\n"
    "\t    [-o keylocation=<value>] [-o pbkdf2iters=<value>]\n"
    "\t    <filesystem|volume>\n"
    "\tchange-key -i [-l] <filesystem|volume>\n",
    "program": "\tprogram [-jn] [-t <instruction limit>] [-m <memory limit (b)>]\n"
    "\t    <pool> <program file> [lua args...]\n",
    "wait": "\twait [-t <activity>] <filesystem>\n",
    "zone": "\tzone <nsfile> <filesystem>\n",
    "unzone": "\tunzone <nsfile> <filesystem>\n",
}

ZFS_COMMAND_ORDER = [
    "version", None, "create", "destroy", None, "snapshot", "rollback", "clone", "promote",
    "rename", "bookmark", "diff", None, "list", None, "set", "get", "inherit", "upgrade",
    None, "userspace", "groupspace", "projectspace", None, "project", None, "mount",
    "unmount", "share", "unshare", None, "send", "receive", "redact", None, "allow",
    "unallow", None, "hold", "holds", "release", None, "load-key", "unload-key",
    "change-key", None, "program", "wait", None, "zone", "unzone",
]  # fmt: skip

CURRENT_CMD = [None]


def zfs_usage(requested: bool = False) -> Exit:
    out = []
    cmd = CURRENT_CMD[0]
    if cmd is None:
        out.append("usage: zfs command args ...\n")
        out.append("where 'command' is one of the following:\n\n")
        for name in ZFS_COMMAND_ORDER:
            out.append("\n" if name is None else ZFS_USAGE[name])
        out.append("\nEach dataset is of the form: pool/[dataset/]*dataset[@name]\n")
    else:
        out.append("usage:\n")
        out.append(ZFS_USAGE[cmd])
    if zversion() < (2, 3, 0):  # no JSON output before 2.3
        text = "".join(out).replace(" [-j [--json-int]]", "").replace(" [-j]\n", "\n")
        out = [text]
    if cmd in ("set", "get", "inherit", "list"):
        out.append("\nThe following properties are supported:\n")
        out.append("\n\t%-21s %s  %s   %s\n\n" % ("PROPERTY", "EDIT", "INHERIT", "VALUES"))
        for name, p in NATIVE.items():
            if p.hidden:
                continue
            edit = "NO" if p.kind == "ro" else "YES"
            inh = "YES" if p.kind == "inherit" else "NO"
            out.append("\t%-22s  %-4s  %7s   %s\n" % (name, edit, inh, p.values))
        out.append(
            "\nSizes are specified in bytes with standard units such as K, M, G, etc.\n"
            "\nUser-defined properties can be specified by using a name containing a colon (:).\n"
        )
    else:
        out.append("\nFor the property list, run: zfs set|get\n")
        out.append("\nFor the delegated permission list, run: zfs allow|unallow\n")
        out.append("\nFor further help on a command or topic, run: zfs help [<topic>]\n")
    stream = sys.stdout if requested else sys.stderr
    stream.write("".join(out))
    stream.flush()
    return Exit(0 if requested else 2)


def usage_err(msg: str | None = None) -> Exit:
    if msg:
        err(msg)
    return zfs_usage(False)


# ----------------------------------------------------------------------------- getopt


def getopts(args, spec: str, longopts: dict | None = None, colon_msgs: bool = True):
    """GNU-style (permuting) getopt. spec like "rHd:o:". Returns (opts, operands)."""
    takes = {}
    i = 0
    while i < len(spec):
        ch = spec[i]
        if i + 1 < len(spec) and spec[i + 1] == ":":
            takes[ch] = True
            i += 2
        else:
            takes[ch] = False
            i += 1
    opts, operands = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            operands.extend(args[i + 1 :])
            break
        if a.startswith("--") and longopts is not None:
            name, eq, val = a[2:].partition("=")
            if name not in longopts:
                raise usage_err("invalid option '%s'" % a)
            ch, needs = longopts[name]
            if needs:
                if not eq:
                    if i + 1 >= len(args):
                        raise usage_err("missing argument for '%s' option" % a)
                    i += 1
                    val = args[i]
                opts.append((ch, val))
            else:
                opts.append((ch, None))
            i += 1
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                if ch not in takes:
                    raise usage_err("invalid option '%s'" % ch)
                if takes[ch]:
                    if j + 1 < len(a):
                        opts.append((ch, a[j + 1 :]))
                    elif i + 1 < len(args):
                        i += 1
                        opts.append((ch, args[i]))
                    else:
                        if colon_msgs:
                            raise usage_err("missing argument for '%s' option" % ch)
                        raise usage_err("invalid option '%s'" % ch)
                    break
                opts.append((ch, None))
                j += 1
            i += 1
            continue
        operands.append(a)
        i += 1
    return opts, operands


# ----------------------------------------------------------------------------- names

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.: ")


def name_problem(name: str, allow_snap: bool, require_snap: bool = False) -> str | None:
    if not name:
        return "empty component or misplaced '@' or '#' delimiter in name"
    if "@" in name and not allow_snap:
        return "snapshot delimiter '@' is not expected here"
    if require_snap and "@" not in name:
        return "missing '@' delimiter in snapshot name"
    if "#" in name:
        return "bookmark delimiter '#' is not expected here"
    if "%" in name:
        return "invalid character '%' in name"
    if len(name) >= 256:
        return "name is too long"
    if name.startswith("/"):
        return "leading slash in name"
    if name.endswith("/"):
        return "trailing slash in name"
    if name.count("@") > 1:
        return "multiple '@' and/or '#' delimiters in name"
    fs, _, snap = name.partition("@")
    comps = fs.split("/")
    for c in comps:
        if c == "":
            return "empty component or misplaced '@' or '#' delimiter in name"
        if c == ".":
            return "self reference, '.' is found in name"
        if c == "..":
            return "parent reference, '..' is found in name"
        for ch in c:
            if ch not in NAME_CHARS:
                return "invalid character '%s' in name" % ch
    if "@" in name:
        if snap == "":
            return "empty component or misplaced '@' or '#' delimiter in name"
        for ch in snap:
            if ch not in NAME_CHARS:
                return "invalid character '%s' in name" % ch
    if not comps[0][0].isalpha():
        return "pool doesn't begin with a letter"
    return None


def parent_of(name: str) -> str | None:
    return name.rsplit("/", 1)[0] if "/" in name else None


def pool_of(name: str) -> str:
    return name.split("@")[0].split("/")[0]


def is_descendant(name: str, ancestor: str) -> bool:
    return name.startswith(ancestor + "/")


# ----------------------------------------------------------------------------- properties


class Prop:
    def __init__(self, kind, types, default, col, right=False, values="", hidden=False):
        self.kind = kind  # ro | inherit | default | onetime
        self.types = types  # set of "filesystem","snapshot"
        self.default = default
        self.col = col
        self.right = right
        self.values = values
        self.hidden = hidden


FS = frozenset(["filesystem"])
SN = frozenset(["snapshot"])
ALL = frozenset(["filesystem", "snapshot", "volume"])
ONOFF = ("on", "off")

NATIVE = {
    "type": Prop("ro", ALL, None, "TYPE", False, "filesystem | volume | snapshot | bookmark"),
    "creation": Prop("ro", ALL, None, "CREATION", False, "<date>"),
    "used": Prop("ro", ALL, None, "USED", True, "<size>"),
    "available": Prop("ro", FS, None, "AVAIL", True, "<size>"),
    "referenced": Prop("ro", ALL, None, "REFER", True, "<size>"),
    "compressratio": Prop("ro", ALL, None, "RATIO", True, "<1.00x or higher if compressed>"),
    "mounted": Prop("ro", FS, None, "MOUNTED", False, "yes | no"),
    "origin": Prop("ro", FS, None, "ORIGIN", False, "<snapshot>"),
    "quota": Prop("default", FS, "0", "QUOTA", True, "<size> | none"),
    "reservation": Prop("default", FS, "0", "RESERV", True, "<size> | none"),
    "recordsize": Prop("inherit", FS, "131072", "RECSIZE", True, "512 to 1M, power of 2"),
    "mountpoint": Prop("inherit", FS, None, "MOUNTPOINT", False, "<path> | legacy | none"),
    "sharenfs": Prop("inherit", FS, "off", "SHARENFS", False, "on | off | NFS share options"),
    "checksum": Prop("inherit", FS, "on", "CHECKSUM", False,
                     "on | off | fletcher2 | fletcher4 | sha256 | sha512 | skein | edonr"),
    "compression": Prop("inherit", FS, "off", "COMPRESS", False,
                        "on | off | lzjb | gzip | gzip-[1-9] | zle | lz4 | zstd | zstd-[1-19]"),
    "atime": Prop("inherit", FS, "on", "ATIME", False, "on | off"),
    "devices": Prop("inherit", FS, "on", "DEVICES", False, "on | off"),
    "exec": Prop("inherit", FS, "on", "EXEC", False, "on | off"),
    "setuid": Prop("inherit", FS, "on", "SETUID", False, "on | off"),
    "readonly": Prop("inherit", FS, "off", "RDONLY", False, "on | off"),
    "snapdir": Prop("inherit", FS, "hidden", "SNAPDIR", False, "hidden | visible"),
    "canmount": Prop("default", FS, "on", "CANMOUNT", False, "on | off | noauto"),
    "xattr": Prop("inherit", FS | SN, "on", "XATTR", False, "on | off | dir | sa"),
    "copies": Prop("inherit", FS, "1", "COPIES", True, "1 | 2 | 3"),
    "guid": Prop("ro", ALL, None, "GUID", True, "<uint64>"),
    "createtxg": Prop("ro", ALL, None, "CREATETXG", True, "<uint64>"),
    "usedbysnapshots": Prop("ro", FS, None, "USEDSNAP", True, "<size>"),
    "usedbydataset": Prop("ro", FS, None, "USEDDS", True, "<size>"),
    "usedbychildren": Prop("ro", FS, None, "USEDCHILD", True, "<size>"),
    "usedbyrefreservation": Prop("ro", FS, None, "USEDREFRESERV", True, "<size>"),
    "userrefs": Prop("ro", SN, None, "USERREFS", True, "<count>"),
    "defer_destroy": Prop("ro", SN, None, "DEFER_DESTROY", False, "yes | no"),
    "refquota": Prop("default", FS, "0", "REFQUOTA", True, "<size> | none"),
    "refreservation": Prop("default", FS, "0", "REFRESERV", True, "<size> | none"),
    "primarycache": Prop("inherit", FS, "all", "PRIMARYCACHE", False, "all | none | metadata"),
    "secondarycache": Prop("inherit", FS, "all", "SECONDARYCACHE", False,
                           "all | none | metadata"),
    "logbias": Prop("inherit", FS, "latency", "LOGBIAS", False, "latency | throughput"),
    "dedup": Prop("inherit", FS, "off", "DEDUP", False, "on | off | verify | sha256[,verify]"),
    "sync": Prop("inherit", FS, "standard", "SYNC", False, "standard | always | disabled"),
    "refcompressratio": Prop("ro", ALL, None, "REFRATIO", True,
                             "<1.00x or higher if compressed>"),
    "written": Prop("ro", ALL, None, "WRITTEN", True, "<size>"),
    "logicalused": Prop("ro", FS, None, "LUSED", True, "<size>"),
    "logicalreferenced": Prop("ro", ALL, None, "LREFER", True, "<size>"),
    "encryption": Prop("onetime", ALL, "off", "ENCRYPTION", False,
                       "on | off | aes-128-ccm | aes-192-ccm | aes-256-ccm | aes-128-gcm | "
                       "aes-192-gcm | aes-256-gcm"),
    "receive_resume_token": Prop("ro", FS, None, "RESUMETOK", False, "<string token>"),
    "name": Prop("ro", ALL, None, "NAME", False, "", hidden=True),
    "inconsistent": Prop("ro", ALL, None, "INCONSISTENT", False, "", hidden=True),
}  # fmt: skip

ALIASES = {
    "avail": "available", "refer": "referenced", "ratio": "compressratio",
    "rdonly": "readonly", "compress": "compression", "recsize": "recordsize",
    "reserv": "reservation", "refreserv": "refreservation", "refratio": "refcompressratio",
    "lused": "logicalused", "lrefer": "logicalreferenced", "usedsnap": "usedbysnapshots",
    "usedds": "usedbydataset", "usedchild": "usedbychildren",
    "usedrefreserv": "usedbyrefreservation",
}  # fmt: skip

ENUMS = {
    "atime": ONOFF, "devices": ONOFF, "exec": ONOFF, "setuid": ONOFF, "readonly": ONOFF,
    "snapdir": ("hidden", "visible"), "canmount": ("on", "off", "noauto"),
    "xattr": ("on", "off", "dir", "sa"), "copies": ("1", "2", "3"),
    "primarycache": ("all", "none", "metadata"), "secondarycache": ("all", "none", "metadata"),
    "logbias": ("latency", "throughput"), "sync": ("standard", "always", "disabled"),
    "checksum": ("on", "off", "fletcher2", "fletcher4", "sha256", "sha512", "skein", "edonr",
                 "blake3", "noparity"),
    "dedup": ("on", "off", "verify", "sha256", "sha256,verify", "sha512", "sha512,verify",
              "skein", "skein,verify", "edonr,verify", "blake3", "blake3,verify"),
    "compression": ("on", "off", "lzjb", "gzip", "zle", "lz4", "zstd", "zstd-fast",
                    *("gzip-%d" % i for i in range(1, 10)),
                    *("zstd-%d" % i for i in range(1, 20))),
    "encryption": ("off",),
}  # fmt: skip

USER_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.:")


def canon_prop(name: str) -> str | None:
    """Native property name (after aliases) or None."""
    name = ALIASES.get(name, name)
    return name if name in NATIVE else None


def is_user_prop(name: str) -> bool:
    if ":" not in name or len(name) >= 256:
        return False
    return all(c in USER_CHARS for c in name)


def parse_size(text: str) -> int | None:
    t = text.strip().upper()
    if not t:
        return None
    mult = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
            "P": 1 << 50, "E": 1 << 60}  # fmt: skip
    num = t
    unit = ""
    while num and num[-1].isalpha():
        unit = num[-1] + unit
        num = num[:-1]
    if unit.endswith("B") and len(unit) == 2:
        unit = unit[0]
    if unit not in mult:
        return None
    try:
        val = float(num)
    except ValueError:
        return None
    return int(val * mult[unit])


def nicenum(num: int, bytes_: bool = True) -> str:
    units = ["B" if bytes_ else "", "K", "M", "G", "T", "P", "E"]
    n = num
    idx = 0
    while n >= 1024 and idx < 6:
        n //= 1024
        idx += 1
    if idx == 0 or num % (1024**idx) == 0:
        return "%d%s" % (n, units[idx])
    val = num / float(1024**idx)
    for prec in (2, 1, 0):
        s = "%.*f%s" % (prec, val, units[idx])
        if len(s) <= 5:
            return s
    return s


def fmt_time(t: int, holds: bool = False) -> str:
    """libzfs prints a time property with "%k" (space-padded hour: "Tue Nov 24  0:20 2026");
    `zfs holds` has its own format with "%H"."""
    return time.strftime("%a %b %e %H:%M %Y" if holds else "%a %b %e %k:%M %Y", time.localtime(t))


# ----------------------------------------------------------------------------- state


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
            os.makedirs(d, exist_ok=True)
        marker = os.path.join(root, ".zfs_standin_root")
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write("zfs stand-in state root\n")

    # -- locking
    def lock(self):
        if self._lockfd is None:
            self._lockfd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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
        mid = hashlib.sha256(data).hexdigest()
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
            side = SideWriter(self.tmpfile(), st.st_size)  # copy + hash while this reads
            try:
                with open_noatime(path) as src:
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
            h = hashlib.sha256()
            with open_noatime(path) as src:
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


def open_noatime(path: str):
    """Open a live file for reading without touching its atime (see Model.atime_touched):
    the stand-in's own reads are not a user's. O_NOATIME needs the owner or root."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    return os.fdopen(fd, "rb")


def get_host() -> Host:
    root = os.environ.get("ZFS_STANDIN_ROOT")
    if not root:
        raise fail(
            "zfs stand-in: ZFS_STANDIN_ROOT is not set (it names the directory that holds "
            "this host's pools and datasets)"
        )
    return Host(os.path.abspath(root))


# ----------------------------------------------------------------------------- trees


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


def preallocate(fd: int, size: int) -> None:
    """Reserve blocks up front: on ext4 this makes large writes several times faster."""
    if size >= CHUNK:
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fallocate(fd, 0, size)


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
    host: Host, top: str, target: dict, exclude: set, prewritten: dict | None = None
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


# ----------------------------------------------------------------------------- model


class Model:
    """Operations on a loaded state dict."""

    def __init__(self, host: Host, st: dict):
        self.host = host
        self.st = st
        self._live_cache = {}

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
        return name in self.ds

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
        pre = name + "/"
        out = [n for n in self.ds if n.startswith(pre)]
        if not recursive:
            out = [n for n in out if "/" not in n[len(pre) :]]
        return sorted(out)

    def open(self, name: str, types=("filesystem", "snapshot", "volume")) -> None:
        """Validate like zfs_open(); raise with OpenZFS's message when it fails."""
        prob = name_problem(name, "snapshot" in types)
        if prob:
            raise fail("cannot open '%s': %s" % (name, prob))
        if not self.exists(name):
            raise fail("cannot open '%s': dataset does not exist" % name)
        kind = "snapshot" if "@" in name else "filesystem"
        if kind not in types:
            raise fail("cannot open '%s': operation not applicable to datasets of this type" % name)

    def guid_new(self) -> int:
        while True:
            g = int.from_bytes(os.urandom(8), "big")
            if g:
                return g

    # -- dataset creation
    def new_fs(self, name: str, local: dict | None = None, creation: int | None = None):
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

    def desired_dir(self, name: str) -> str | None:
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
                continue
            if os.path.isdir(want):
                os.rmdir(want)
            os.makedirs(os.path.dirname(want), exist_ok=True)
            if os.path.isdir(cur):
                os.rename(cur, want)
            else:
                os.makedirs(want, exist_ok=True)
            d["dir"] = want
            for n2, d2 in self.ds.items():
                if n2 != name and d2.get("dir", "").startswith(cur + "/"):
                    d2["dir"] = want + d2["dir"][len(cur) :]

    # -- live content
    def live(self, name: str, store: bool = False) -> dict:
        key = (name, store)
        if key not in self._live_cache:
            self._live_cache[key] = scan_tree(
                self.host, self.ds[name]["dir"], self.exclude_for(name), store
            )
            if store:
                self._live_cache[(name, False)] = self._live_cache[key]
        return self._live_cache[key]

    def snap_manifest(self, s: dict) -> dict:
        return self.host.get_manifest(s["manifest"])

    def modified_since(self, name: str, s: dict | None) -> bool:
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

    # -- properties
    def _own(self, obj: dict, prop: str):
        """(value, source) from an object's own property layers, or None."""
        if prop in obj.get("local", {}):
            return obj["local"][prop], "local"
        if prop in obj.get("mask", []):
            return "MASK", None
        if prop in obj.get("received", {}):
            return obj["received"][prop], "received"
        return None

    def get_prop(self, name: str, prop: str):
        """Effective (value, source kind, source dataset) for an inheritable, default or
        user property. Source kind: local|received|inherited|default|none."""
        user = canon_prop(prop) is None
        if "@" in name:
            fs, _, sn = name.partition("@")
            s = self.find_snap(self.ds[fs], sn)
            own = self._own(s, prop)
            if own is not None and own[0] != "MASK":
                return own[0], own[1], name
            if not user:
                p = NATIVE[prop]
                return p.default, "default", None
            v, kind, src = self.get_prop(fs, prop)
            if kind in ("local", "received", "inherited"):
                return v, "inherited", src if kind == "inherited" else fs
            return v, kind, src
        if prop == "mountpoint":
            return self.mountpoint_default(name)
        cur = name
        first = True
        while cur is not None:
            d = self.ds[cur]
            own = self._own(d, prop)
            if own is not None and own[0] != "MASK":
                if first:
                    return own[0], own[1], cur
                return own[0], "inherited", cur
            if not user and NATIVE[prop].kind != "inherit":
                break
            cur = parent_of(cur)
            first = False
        if user:
            return "-", "none", None
        return NATIVE[prop].default, "default", None

    def mountpoint_default(self, name: str):
        # walk up to the first ancestor with an explicit mountpoint
        cur = name
        suffix = []
        while cur is not None:
            d = self.ds[cur]
            own = self._own(d, "mountpoint")
            if own is not None and own[0] != "MASK" and cur != name:
                base = own[0]
                if base in ("none", "legacy"):
                    return base, "inherited", cur
                return os.path.join(base, *reversed(suffix)), "inherited", cur
            if own is not None and own[0] != "MASK" and cur == name:
                return own[0], own[1], cur
            suffix.append(cur.rsplit("/", 1)[-1])
            cur = parent_of(cur)
        return self.default_mountpoint(name), "default", None

    def prop_value(self, name: str, prop: str, parsable: bool):
        """(value string, source kind, source ds, received value) for display. Value None
        means the property does not apply to this type."""
        kind = "snapshot" if "@" in name else "filesystem"
        native = canon_prop(prop)
        if native is None:
            v, k, src = self.get_prop(name, prop)
            recvd = self._recvd(name, prop)
            return v, k, src, recvd
        p = NATIVE[native]
        if kind not in p.types:
            return None, "none", None, None
        if p.kind in ("inherit", "default", "onetime"):
            v, k, src = self.get_prop(name, native)
            recvd = self._recvd(name, native)
            return self.render_native(native, v, parsable), k, src, recvd
        return self.render_native(native, self.ro_value(name, native), parsable), "none", None, None

    def _recvd(self, name, prop):
        return self.obj(name).get("received", {}).get(prop)

    def render_native(self, prop: str, v, parsable: bool) -> str:
        if v is None:
            return "-"
        if prop in ("quota", "reservation", "refquota", "refreservation"):
            n = int(v)
            if n == 0:
                return "0" if parsable else "none"
            return str(n) if parsable else nicenum(n)
        if prop == "recordsize":
            return str(int(v)) if parsable else nicenum(int(v))
        if prop == "written":  # libzfs's plain zfs_nicenum: "0", "512", "1.50M" (no "B")
            return str(int(v)) if parsable else nicenum(int(v), bytes_=False)
        if prop in ("used", "available", "referenced", "usedbysnapshots",
                    "usedbydataset", "usedbychildren", "usedbyrefreservation",
                    "logicalused", "logicalreferenced"):  # fmt: skip
            return str(int(v)) if parsable else nicenum(int(v))
        if prop == "creation":
            return str(int(v)) if parsable else fmt_time(int(v))
        if prop in ("compressratio", "refcompressratio"):
            return "1.00" if parsable else "1.00x"
        return str(v)

    def ro_value(self, name: str, prop: str):
        if "@" in name:
            d, s = self.snap(name)
            fsname = name.split("@")[0]
        else:
            d, s = self.ds[name], None
            fsname = name
        if prop == "name":
            return name
        if prop == "type":
            return "snapshot" if s else d["type"]
        if prop == "creation":
            return (s or d)["creation"]
        if prop == "guid":
            return (s or d)["guid"]
        if prop == "createtxg":
            return (s or d)["createtxg"]
        if prop in ("compressratio", "refcompressratio"):
            return "1.00x"
        if prop == "mounted":
            return "yes" if d["mounted"] and not d["inconsistent"] else "no"
        if prop == "origin":
            return None
        if prop == "userrefs":
            return len(s["holds"])
        if prop == "defer_destroy":
            return "off"
        if prop == "inconsistent":
            return "1" if d["inconsistent"] else "0"
        if prop == "receive_resume_token":
            return d["partial"]["token"] if d.get("partial") else None
        if prop in ("referenced", "logicalreferenced"):
            if s:
                return manifest_size(self.snap_manifest(s))
            return manifest_size(self.live(fsname))
        if prop == "written":
            return self.written(fsname, s)
        if prop in ("used", "logicalused"):
            return self.used(fsname, s)
        if prop == "usedbysnapshots":
            return (
                self.used(fsname, None)
                - manifest_size(self.live(fsname))
                - sum(self.used(c, None) for c in self.children(fsname, recursive=False))
            )
        if prop == "usedbydataset":
            return manifest_size(self.live(fsname))
        if prop == "usedbychildren":
            return sum(self.used(c, None) for c in self.children(fsname, recursive=False))
        if prop == "usedbyrefreservation":
            return 0
        if prop == "available":
            pool = pool_of(fsname)
            total = self.st["pools"].get(pool, {}).get("size", 10 << 30)
            return max(total - self.used(pool, None), 0)
        return None

    def written(self, fsname: str, s: dict | None) -> int:
        d = self.ds[fsname]
        if s is None:
            newest = d["snaps"][-1] if d["snaps"] else None
            cur = self.live(fsname)
        else:
            idx = d["snaps"].index(s)
            newest = d["snaps"][idx - 1] if idx > 0 else None
            cur = self.snap_manifest(s)
        base = self.snap_manifest(newest) if newest else {}
        return sum(e[3] for r, e in cur.items() if e[0] == "f" and (r not in base or base[r] != e))

    def used(self, fsname: str, s: dict | None) -> int:
        d = self.ds[fsname]
        if s is not None:
            others = set()
            for o in d["snaps"]:
                if o is not s:
                    others.update(e[1] for e in self.snap_manifest(o).values() if e[0] == "f")
            others.update(e[1] for e in self.live(fsname).values() if e[0] == "f")
            seen = set()
            total = 0
            for e in self.snap_manifest(s).values():
                if e[0] == "f" and e[1] not in others and e[1] not in seen:
                    seen.add(e[1])
                    total += e[3]
            return total
        live = self.live(fsname)
        total = manifest_size(live)
        seen = {e[1] for e in live.values() if e[0] == "f"}
        for o in d["snaps"]:
            for e in self.snap_manifest(o).values():
                if e[0] == "f" and e[1] not in seen:
                    seen.add(e[1])
                    total += e[3]
        for c in self.children(fsname, recursive=False):
            total += self.used(c, None)
        return total

    # -- property setting
    def validate_set(self, name: str, prop: str, value: str, errbuf: str) -> tuple:
        """Returns (canonical prop, canonical value) or raises with OpenZFS's message."""
        kind = "snapshot" if "@" in name else "filesystem"
        native = canon_prop(prop)
        if native is None and is_user_prop(prop):
            if len(value) >= 8192:
                raise fail("%s: property value '%s' is too long" % (errbuf, value))
            return prop, value
        # same order of checks as libzfs zfs_valid_proplist()
        if kind == "snapshot":
            raise fail("%s: this property can not be modified for snapshots" % errbuf)
        if native is None:
            raise fail("%s: invalid property '%s'" % (errbuf, prop))
        p = NATIVE[native]
        if kind not in p.types:
            raise fail("%s: '%s' does not apply to datasets of this type" % (errbuf, native))
        if p.kind in ("ro", "onetime") or native == "name":
            raise fail("%s: '%s' is readonly" % (errbuf, native))
        if native in ENUMS:
            if value not in ENUMS[native]:
                raise fail("%s: '%s' must be one of '%s'" % (errbuf, native, p.values))
            return native, value
        if native == "mountpoint":
            if value in ("none", "legacy") or value.startswith("/"):
                return native, os.path.normpath(value) if value.startswith("/") else value
            raise fail("%s: '%s' must be an absolute path, 'none', or 'legacy'"
                       % (errbuf, native))  # fmt: skip
        if native in ("quota", "reservation", "refquota", "refreservation"):
            if value == "none":
                return native, "0"
            n = parse_size(value)
            if n is None:
                raise fail("%s: bad numeric value '%s'" % (errbuf, value))
            return native, str(n)
        if native == "recordsize":
            n = parse_size(value)
            if n is None:
                raise fail("%s: bad numeric value '%s'" % (errbuf, value))
            if n < 512 or n > (16 << 20) or n & (n - 1):
                raise fail("%s: 'recordsize' must be power of 2 from 512B to 16M"
                           % errbuf)  # fmt: skip
            return native, str(n)
        return native, value

    def set_local(self, name: str, prop: str, value: str) -> None:
        obj = self.obj(name)
        obj.setdefault("local", {})[prop] = value
        if prop in obj.get("mask", []):
            obj["mask"].remove(prop)

    def obj(self, name: str) -> dict:
        if "@" in name:
            return self.snap(name)[1]
        return self.ds[name]

    def inherit(self, name: str, prop: str, revert_received: bool) -> None:
        obj = self.obj(name)
        obj.setdefault("local", {}).pop(prop, None)
        mask = obj.setdefault("mask", [])
        if revert_received:
            if prop in mask:
                mask.remove(prop)
        elif obj.get("hasrecvd") and prop not in mask:
            mask.append(prop)

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
        return self.model

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.write and (exc_type is None or issubclass(exc_type, Exit)):
                self.host.save(self.model.st)
        finally:
            self.host.unlock()
        return False


# ----------------------------------------------------------------------------- zfs create


def cmd_create(host: Host, args) -> int:
    opts, ops = getopts(args, "Pnpuvo:b:sV:")
    parents = False
    props = {}
    for ch, val in opts:
        if ch == "p":
            parents = True
        elif ch == "o":
            k, eq, v = val.partition("=")
            if not eq:
                raise usage_err("missing '=' for property=value argument")
            if k in props:
                raise usage_err("property '%s' specified multiple times" % k)
            props[k] = v
        elif ch == "V":
            raise fail("cannot create volume: volumes are not modelled by the zfs stand-in")
    if not ops:
        raise usage_err("missing filesystem argument")
    if len(ops) > 1:
        raise usage_err("too many arguments")
    name = ops[0]
    errbuf = "cannot create '%s'" % name
    prob = name_problem(name, False)
    if prob:
        raise fail("%s: %s" % (errbuf, prob))
    with Session(host) as m:
        pool = pool_of(name)
        if pool not in m.st["pools"]:
            raise fail("%s: no such pool '%s'" % (errbuf, pool))
        if name in m.ds:
            if parents:
                return 0
            raise fail("%s: dataset already exists" % errbuf)
        par = parent_of(name)
        if par is None:
            raise fail("%s: dataset already exists" % errbuf)
        missing = []
        cur = par
        while cur is not None and cur not in m.ds:
            missing.append(cur)
            cur = parent_of(cur)
        if missing and not parents:
            raise fail("%s: parent does not exist" % errbuf)
        checked = {}
        for k, v in props.items():
            ck, cv = m.validate_set(name, k, v, errbuf)
            checked[ck] = cv
        for p in reversed(missing):
            m.new_fs(p)
        m.new_fs(name, checked)
    return 0


# ----------------------------------------------------------------------------- zfs destroy


def expand_snapspec(d: dict, spec: str):
    """OpenZFS snapspec: a,b,c%d ... Returns list of snaps or raises."""
    out = []
    for part in spec.split(","):
        if "%" in part:
            a, _, b = part.partition("%")
            names = [s["name"] for s in d["snaps"]]
            ia = names.index(a) if a else 0
            ib = names.index(b) if b else len(names) - 1
            if (a and a not in names) or (b and b not in names):
                continue
            out.extend(d["snaps"][ia : ib + 1])
        else:
            for s in d["snaps"]:
                if s["name"] == part:
                    out.append(s)
    return out


def cmd_destroy(host: Host, args) -> int:
    opts, ops = getopts(args, "vpndfrR", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    recurse = "r" in flags or "R" in flags
    dry = "n" in flags
    verbose = "v" in flags or "p" in flags
    parsable = "p" in flags
    if not ops:
        raise usage_err("missing dataset argument")
    if len(ops) > 1:
        raise usage_err("too many arguments")
    target = ops[0]
    rv = 0
    with Session(host) as m:
        if "@" in target:
            fs, _, spec = target.partition("@")
            m.open(fs, ("filesystem", "volume"))
            victims = []
            fss = [fs] + (m.children(fs) if recurse else [])
            for f in fss:
                for s in expand_snapspec(m.ds[f], spec):
                    victims.append((f, s))
            if not victims:
                raise fail("could not find any snapshots to destroy; check snapshot names.")
            if verbose:
                for f, s in victims:
                    nm = "%s@%s" % (f, s["name"])
                    if parsable:
                        print("destroy\t%s" % nm)
                    else:
                        print(("would destroy %s" if dry else "will destroy %s") % nm)
                total = sum(m.used(f, s) for f, s in victims)
                if parsable:
                    print("reclaim\t%d" % total)
                else:
                    print(("would reclaim %s" if dry else "will reclaim %s") % nicenum(total))
            if dry:
                return 0
            for f, s in victims:
                if s["holds"]:
                    rv = 1
                    snapname = "%s@%s" % (f, s["name"])
                    if zversion() >= (2, 3, 2):  # Debian's 2.3.2 already says "held"
                        err("cannot destroy snapshot %s: it's being held. Run 'zfs holds -r "
                            "%s' to see holders." % (snapname, snapname))  # fmt: skip
                    else:
                        err("cannot destroy snapshot %s: dataset is busy" % snapname)
            if rv:
                return rv
            for f, s in victims:
                m.ds[f]["snaps"].remove(s)
            return 0
        m.open(target, ("filesystem", "volume"))
        if not recurse and "/" not in target:
            err("cannot destroy '%s': operation does not apply to pools" % target)
            err("use 'zfs destroy -r %s' to destroy all datasets in the pool" % target)
            err("use 'zpool destroy %s' to destroy the pool itself" % target)
            return 1
        d = m.ds[target]
        deps = []
        for c in m.children(target):
            deps.append(c)
            deps.extend("%s@%s" % (c, s["name"]) for s in m.ds[c]["snaps"])
        deps.extend("%s@%s" % (target, s["name"]) for s in d["snaps"])
        if deps and not recurse:
            err("cannot destroy '%s': filesystem has children" % target)
            err("use '-r' to destroy the following datasets:")
            for x in deps:
                err(x)
            return 1
        order = [*list(reversed(m.children(target))), target]
        if verbose:
            for x in sorted(deps) + ([target] if "/" in target else []):
                if parsable:
                    print("destroy\t%s" % x)
                else:
                    print(("would destroy %s" if dry else "will destroy %s") % x)
        if dry:
            return 0
        for f in order:
            held = [s for s in m.ds[f]["snaps"] if s["holds"]]
            for s in held:
                err("cannot destroy snapshot %s@%s: dataset is busy" % (f, s["name"]))
                rv = 1
            if held:
                m.ds[f]["snaps"] = held
                continue
            m.ds[f]["snaps"] = []
            if "/" not in f:
                continue  # the pool's root dataset stays
            if m.children(f):
                rv = 1
                continue
            m.remove_fs(f)
    return rv


# ----------------------------------------------------------------------------- snapshot


def take_snapshots(m: Model, names: list, props: dict) -> None:
    txg = m.next_txg()
    now = int(time.time())
    for full in names:
        fs, _, sn = full.partition("@")
        manifest = m.live(fs, store=True)
        mid = m.host.put_manifest(manifest)
        m.mark_quiet(fs)
        m.ds[fs]["snaps"].append(
            {
                "name": sn,
                "guid": m.guid_new(),
                "createtxg": txg,
                "creation": now,
                "manifest": mid,
                "local": dict(props),
                "received": {},
                "mask": [],
                "holds": {},
            }
        )


def cmd_snapshot(host: Host, args) -> int:
    opts, ops = getopts(args, "ro:")
    recursive = False
    props = {}
    for ch, val in opts:
        if ch == "r":
            recursive = True
        else:
            k, eq, v = val.partition("=")
            if not eq:
                err("missing '=' for property=value argument")
                return 1
            if k in props:
                err("property '%s' specified multiple times" % k)
                return 1
            props[k] = v
    if not ops:
        raise usage_err("missing snapshot argument")
    multiple = recursive or len(ops) > 1
    with Session(host) as m:
        names = []
        for arg in ops:
            if "@" not in arg:
                raise usage_err()
            fs, _, sn = arg.partition("@")
            prob = name_problem(fs, False)
            if prob:
                err("cannot open '%s': %s" % (fs, prob))
                raise usage_err()
            if fs not in m.ds:
                err("cannot open '%s': dataset does not exist" % fs)
                raise usage_err()
            fss = [fs] + (m.children(fs) if recursive else [])
            for f in fss:
                if recursive and m.ds[f]["inconsistent"]:
                    continue
                names.append("%s@%s" % (f, sn))
        for nm in names:
            prob = name_problem(nm, True, True)
            if prob:
                err("cannot create snapshot '%s': %s" % (nm, prob))
                return 1
        checked = {}
        for k, v in props.items():
            ck, cv = m.validate_set(names[0], k, v, "cannot create snapshots ")
            checked[ck] = cv
        fsset = [n.split("@")[0] for n in names]
        if len(set(fsset)) != len(fsset):
            err("cannot create snapshots : multiple snapshots of same fs not allowed")
            if multiple:
                err("no snapshots were created")
            return 1
        bad = [n for n in names if m.exists(n)]
        if bad:
            for n in bad:
                err("cannot create snapshot '%s': dataset already exists" % n)
            if multiple:
                err("no snapshots were created")
            return 1
        take_snapshots(m, names, checked)
    return 0


# ----------------------------------------------------------------------------- rollback


def do_rollback(m: Model, fs: str, s: dict) -> None:
    d = m.ds[fs]
    apply_manifest(m.host, d["dir"], m.snap_manifest(s), m.exclude_for(fs))
    m._live_cache.clear()
    m.mark_quiet(fs)


def cmd_rollback(host: Host, args) -> int:
    opts, ops = getopts(args, "rRf", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    recurse = "r" in flags or "R" in flags
    if not ops:
        raise usage_err("missing dataset argument")
    if len(ops) > 1:
        raise usage_err("too many arguments")
    target = ops[0]
    with Session(host) as m:
        m.open(target, ("snapshot",))
        fs = target.split("@")[0]
        d, s = m.snap(target)
        younger = [x for x in d["snaps"] if x["createtxg"] > s["createtxg"]]
        if younger and not recurse:
            err("cannot rollback to '%s': more recent snapshots or bookmarks exist" % target)
            err("use '-r' to force deletion of the following snapshots and bookmarks:")
            for i, x in enumerate(younger):
                if i == 32:
                    err("Output limited to 32 snapshots/bookmarks")
                    break
                err("%s@%s" % (fs, x["name"]))
            return 1
        failed = False
        for x in younger:
            if x["holds"]:
                # rollback destroys one by one, through zfs_destroy: its own wording
                err("cannot destroy '%s@%s': dataset is busy" % (fs, x["name"]))
                failed = True
            else:
                d["snaps"].remove(x)
        if failed:
            return 1
        do_rollback(m, fs, s)
    return 0


# ----------------------------------------------------------------------------- rename


def cmd_rename(host: Host, args) -> int:
    opts, ops = getopts(args, "fpur", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    if len(ops) < 2:
        raise usage_err("missing target dataset argument" if ops else "missing source dataset "
                        "argument")  # fmt: skip
    if len(ops) > 2:
        raise usage_err("too many arguments")
    src, target = ops
    with Session(host) as m:
        if "@" in src:
            m.open(src, ("snapshot",))
            fs, _, old = src.partition("@")
            if "@" not in target or target.startswith("@"):
                target = fs + "@" + target.lstrip("@")
            if target == src:
                return 0
            tfs, _, new = target.partition("@")
            if tfs != fs:
                raise fail("cannot rename to '%s': snapshots must be part of same dataset" % target)
            prob = name_problem(target, True, True)
            if prob:
                raise fail("cannot rename to '%s': %s" % (target, prob))
            fss = [fs] + (m.children(fs) if "r" in flags else [])
            if "r" in flags:
                for f in fss:
                    if m.find_snap(m.ds[f], new) is not None:
                        raise fail(
                            "cannot rename '%s': a child dataset already has a snapshot with "
                            "the new name" % src
                        )
            elif m.find_snap(m.ds[fs], new) is not None:
                raise fail("cannot rename '%s': dataset already exists" % src)
            for f in fss:
                s = m.find_snap(m.ds[f], old)
                if s is not None:
                    s["name"] = new
            return 0
        m.open(src, ("filesystem", "volume"))
        if "r" in flags:
            raise fail("cannot rename to '%s': recursive rename must be a snapshot" % target)
        if target == src:
            return 0
        prob = name_problem(target, False)
        if prob:
            raise fail("cannot rename to '%s': %s" % (target, prob))
        if "/" not in src:
            raise fail("cannot rename to '%s': operation not applicable to datasets of this "
                       "type" % target)  # fmt: skip
        if pool_of(target) != pool_of(src) or "/" not in target:
            raise fail("cannot rename to '%s': datasets must be within same pool" % target)
        if is_descendant(target, src):
            raise fail(
                "cannot rename to '%s': New dataset name cannot be a descendant of current "
                "dataset name" % target
            )
        if target in m.ds:
            raise fail("cannot rename to '%s': dataset already exists" % target)
        tpar = parent_of(target)
        if tpar not in m.ds:
            if "p" in flags:
                missing = []
                cur = tpar
                while cur not in m.ds:
                    missing.append(cur)
                    cur = parent_of(cur)
                for p in reversed(missing):
                    m.new_fs(p)
            else:
                raise fail("cannot rename to '%s': parent does not exist" % target)
        moved = [src, *m.children(src)]
        for n in moved:
            newn = target + n[len(src) :]
            m.ds[newn] = m.ds.pop(n)
        m.relocate_dirs()
    return 0


# ----------------------------------------------------------------------------- get / list


def parse_depth(val: str) -> int:
    try:
        n = int(val, 0)
    except ValueError:
        raise usage_err("%s is not an integer" % val) from None
    if n < 0:
        raise usage_err("Depth can not be negative.")
    return n


TYPE_WORDS = {
    "filesystem": {"filesystem"}, "fs": {"filesystem"}, "volume": {"volume"},
    "vol": {"volume"}, "snapshot": {"snapshot"}, "snap": {"snapshot"},
    "bookmark": {"bookmark"}, "all": {"filesystem", "volume", "snapshot", "bookmark"},
}  # fmt: skip


def parse_types(val: str) -> set:
    out = set()
    for tok in val.split(","):
        if tok not in TYPE_WORDS:
            raise usage_err("invalid type '%s'" % tok)
        out |= TYPE_WORDS[tok]
    return out


def iterate(m: Model, args, types: set, recurse: bool, depth: int | None, listsnaps: bool):
    """listsnaps=False: snapshots are listed when named, not found by recursion."""
    """zfs_for_each: returns (sorted names, ret)."""
    out = []
    seen = set()
    ret = 0

    def visit(name: str, level: int):
        kind = "snapshot" if "@" in name else "filesystem"
        if kind in types and name not in seen:
            seen.add(name)
            out.append(name)
        if not recurse or (depth is not None and level >= depth):
            return
        if kind == "filesystem":
            for c in m.children(name, recursive=False):
                visit(c, level + 1)
            if "snapshot" in types and listsnaps:
                for s in m.ds[name]["snaps"]:
                    visit("%s@%s" % (name, s["name"]), level + 1)

    if not args:
        recurse = True
        for p in sorted(m.st["pools"]):
            if p in m.ds:
                visit(p, 0)
    else:
        argtypes = set(types)
        if recurse:
            argtypes.add("filesystem")
        for a in args:
            if a.startswith("/"):
                found = None
                for n, d in m.ds.items():
                    if d.get("dir") == os.path.normpath(a):
                        found = n
                if found is None:
                    err("cannot open '%s': dataset does not exist" % a)
                    ret = 1
                    continue
                a = found
            prob = name_problem(a, "snapshot" in argtypes)
            if prob:
                err("cannot open '%s': %s" % (a, prob))
                ret = 1
                continue
            if not m.exists(a):
                err("cannot open '%s': dataset does not exist" % a)
                ret = 1
                continue
            kind = "snapshot" if "@" in a else "filesystem"
            if kind not in argtypes:
                err("cannot open '%s': operation not applicable to datasets of this type" % a)
                ret = 1
                continue
            visit(a, 0)

    def key(n):
        fs, at, sn = n.partition("@")
        if not at:
            return (fs, 0, 0)
        s = m.find_snap(m.ds[fs], sn)
        return (fs, 1, s["createtxg"])

    out.sort(key=key)
    return out, ret


GET_COLS = ("name", "property", "value", "received", "source")
SOURCES = {"local", "default", "inherited", "received", "temporary", "none"}


def all_props_for(m: Model, name: str) -> list:
    kind = "snapshot" if "@" in name else "filesystem"
    props = [p for p, d in NATIVE.items() if not d.hidden and kind in d.types]
    users = set()
    cur = name
    if "@" in name:
        s = m.obj(name)
        users.update(k for k in list(s.get("local", {})) + list(s.get("received", {})))
        cur = name.split("@")[0]
    while cur is not None:
        d = m.ds[cur]
        users.update(k for k in list(d.get("local", {})) + list(d.get("received", {})))
        cur = parent_of(cur)
    users = [u for u in users if canon_prop(u) is None]
    out = props + sorted(users)
    return out


def source_text(kind: str, src) -> str:
    if kind == "inherited":
        return "inherited from %s" % src
    return {"none": "-", "default": "default", "local": "local", "received": "received",
            "temporary": "temporary"}[kind]  # fmt: skip


def cmd_get(host: Host, args) -> int:
    opts, ops = getopts(args, "d:o:s:jrt:Hp")
    parsable = scripted = recurse = False
    depth = None
    cols = ["name", "property", "value", "source"]
    sources = set(SOURCES)
    types = {"filesystem", "volume", "snapshot", "bookmark"}
    types_given = False
    for ch, val in opts:
        if ch == "p":
            parsable = True
        elif ch == "H":
            scripted = True
        elif ch == "r":
            recurse = True
        elif ch == "d":
            depth = parse_depth(val)
            recurse = True
        elif ch == "j":
            raise fail("zfs stand-in: -j (JSON output) is not modelled")
        elif ch == "o":
            cols = []
            for tok in val.split(","):
                if tok == "all":
                    if cols:
                        raise usage_err('"all" conflicts with specific fields given to -o option')
                    cols = list(GET_COLS)
                    continue
                if tok not in GET_COLS:
                    raise usage_err("invalid column name '%s'" % tok)
                if len(cols) == 5:
                    raise usage_err("too many fields given to -o option")
                cols.append(tok)
        elif ch == "s":
            sources = set()
            for tok in val.split(","):
                if tok not in SOURCES:
                    raise usage_err("invalid source '%s'" % tok)
                sources.add(tok)
        elif ch == "t":
            types = parse_types(val)
            types_given = True
    if not ops:
        raise usage_err("missing property argument")
    fields = ops[0]
    datasets = ops[1:]
    if (
        types_given
        and types in ({"snapshot"}, {"bookmark"})
        and datasets
        and not recurse
        and depth is None
    ):
        recurse = True
        depth = 1
    # property list
    if fields == "all":
        proplist = None
    else:
        proplist = []
        for p in fields.split(","):
            c = canon_prop(p)
            if c is None and not is_user_prop(p):
                if p.startswith("written@"):
                    proplist.append(p)
                    continue
                err("bad property list: invalid property '%s'" % p)
                raise zfs_usage(False)
            proplist.append(c or p)
    with Session(host, write=False) as m:
        names, ret = iterate(m, datasets, types, recurse, depth, listsnaps=True)
        rows = []
        for n in names:
            props = proplist if proplist is not None else all_props_for(m, n)
            for p in props:
                if p.startswith("written@"):
                    v = written_at(m, n, p[len("written@") :])
                    if v is None:
                        continue
                    rows.append((n, p, v if parsable else nicenum(int(v)), "-", "local", None))
                    continue
                v, kind, src, recvd = m.prop_value(n, p, parsable)
                if v is None:
                    if proplist is None:
                        continue
                    v, kind = "-", "none"
                if kind not in sources:
                    continue
                rows.append((n, p, v, recvd if recvd is not None else "-", kind, src))
    out_rows = []
    for n, p, v, recvd, kind, src in rows:
        vals = {"name": n, "property": p, "value": v, "received": recvd,
                "source": source_text(kind, src)}  # fmt: skip
        out_rows.append([vals[c] for c in cols])
    write_table(out_rows, cols, scripted, get_style=True)
    return ret


def written_at(m: Model, name: str, ref: str):
    if "@" in name:
        fs = name.split("@")[0]
        cur = m.snap_manifest(m.obj(name))
    else:
        fs = name
        cur = m.live(fs)
    snapname = ref.split("@")[-1]
    s = m.find_snap(m.ds[fs], snapname)
    if s is None:
        return None
    base = m.snap_manifest(s)
    return str(sum(e[3] for r, e in cur.items() if e[0] == "f" and (r not in base or base[r] != e)))


def write_table(rows, cols, scripted: bool, get_style: bool, right=None, headers=None):
    out = []
    if scripted:
        for r in rows:
            out.append("\t".join(r))
    elif rows:
        if headers is None:
            headers = [c.upper() for c in cols]
        widths = [len(h) for h in headers]
        for r in rows:
            for i, v in enumerate(r):
                widths[i] = max(widths[i], len(v))
        right = right or [False] * len(cols)

        def fmt(vals):
            parts = []
            for i, v in enumerate(vals):
                last = i == len(vals) - 1
                if right[i]:
                    parts.append(v.rjust(widths[i]))
                elif last:
                    parts.append(v)
                else:
                    parts.append(v.ljust(widths[i]))
            return "  ".join(parts)

        out.append(fmt(headers))
        for r in rows:
            out.append(fmt(r))
    if out:
        sys.stdout.write("\n".join(out) + "\n")


def cmd_list(host: Host, args) -> int:
    opts, ops = getopts(args, "jHS:d:o:prs:t:")
    parsable = scripted = recurse = False
    depth = None
    fields = "name,used,available,referenced,mountpoint"
    types = {"filesystem", "volume", "snapshot"}
    types_given = False
    listsnaps = False
    sortcols = []
    for ch, val in opts:
        if ch == "o":
            fields = val
        elif ch == "p":
            parsable = True
        elif ch == "H":
            scripted = True
        elif ch == "r":
            recurse = True
        elif ch == "d":
            depth = parse_depth(val)
            recurse = True
        elif ch == "j":
            raise fail("zfs stand-in: -j (JSON output) is not modelled")
        elif ch in "sS":
            c = canon_prop(val)
            if c is None and not is_user_prop(val):
                raise usage_err("invalid property '%s'" % val)
            sortcols.append((c or val, ch == "S"))
        elif ch == "t":
            types = parse_types(val)
            types_given = True
            listsnaps = True
    if fields == "space" and not types_given:
        types.discard("snapshot")
    if fields == "space":
        fields = "name,avail,used,usedsnap,usedds,usedrefreserv,usedchild"
    if types in ({"snapshot"}, {"bookmark"}) and ops and not recurse:
        recurse = True
        depth = 1
    cols = []
    for p in fields.split(","):
        c = canon_prop(p)
        if c is None and not is_user_prop(p):
            err("bad property list: invalid property '%s'" % p)
            raise zfs_usage(False)
        cols.append(c or p)
    with Session(host, write=False) as m:
        names, ret = iterate(m, ops, types, recurse, depth, listsnaps)
        if sortcols:
            names = sort_names(m, names, sortcols)
        rows = []
        for n in names:
            r = []
            for c in cols:
                if c == "name":
                    r.append(n)
                    continue
                v, _k, _s, _r = m.prop_value(n, c, parsable)
                r.append("-" if v is None else v)
            rows.append(r)
    headers = []
    right = []
    for c in cols:
        if c in NATIVE:
            headers.append(NATIVE[c].col)
            right.append(NATIVE[c].right)
        else:
            headers.append(c.upper())
            right.append(False)
    write_table(rows, cols, scripted, get_style=False, right=right, headers=headers)
    if ret == 0 and not rows and not scripted:
        err("no datasets available")
    return ret


def sort_names(m: Model, names: list, sortcols: list) -> list:
    import functools

    def val(n, prop):
        if prop == "name":
            return n
        if prop in NATIVE:
            p = NATIVE[prop]
            kind = "snapshot" if "@" in n else "filesystem"
            if kind not in p.types:
                return None
            v, _k, _s, _r = m.prop_value(n, prop, True)
            if p.right or prop == "creation":
                try:
                    return int(v)
                except (TypeError, ValueError):
                    return v
            return v
        v = m.get_prop(n, prop)
        return None if v[1] == "none" else v[0]

    base = {n: i for i, n in enumerate(names)}

    def cmp(a, b):
        for prop, rev in sortcols:
            va, vb = val(a, prop), val(b, prop)
            if va is None and vb is None:
                continue
            if va is None:
                return 1
            if vb is None:
                return -1
            if va == vb:
                continue
            r = -1 if va < vb else 1
            return -r if rev else r
        return base[a] - base[b]

    return sorted(names, key=functools.cmp_to_key(cmp))


# ----------------------------------------------------------------------------- set / inherit


def cmd_set(host: Host, args) -> int:
    _opts, ops = getopts(args, "u", colon_msgs=False)
    if not ops:
        raise usage_err("missing arguments")
    if len(ops) < 2:
        if "=" not in ops[0]:
            raise usage_err("missing property=value argument(s)")
        raise usage_err("missing dataset name(s)")
    assigns = []
    ds_start = -1
    for i, a in enumerate(ops):
        if "=" in a:
            if ds_start > 0:
                raise usage_err("invalid argument order")
            assigns.append(a)
        elif ds_start < 0:
            ds_start = i
    if ds_start < 0:
        raise usage_err("missing dataset name(s)")
    props = {}
    for a in assigns:
        k, _, v = a.partition("=")
        if k in props:
            err("property '%s' specified multiple times" % k)
            raise usage_err()
        props[k] = v
    ret = 0
    with Session(host) as m:
        for name in ops[ds_start:]:
            try:
                m.open(name)
            except Exit:
                ret = 1
                continue
            errbuf = "cannot set property for '%s'" % name
            try:
                checked = [m.validate_set(name, k, v, errbuf) for k, v in props.items()]
            except Exit:
                # 2.3 returns -1 from its property callback: the process exits 255
                ret = 255 if zversion() >= (2, 3, 0) else 1
                continue
            for k, v in checked:
                m.set_local(name, k, v)
            if any(k == "mountpoint" for k, _ in checked):
                m.relocate_dirs()
    return ret


def cmd_inherit(host: Host, args) -> int:
    opts, ops = getopts(args, "rS", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    if not ops:
        raise usage_err("missing property argument")
    if len(ops) < 2:
        raise usage_err("missing dataset argument")
    prop = ops[0]
    native = canon_prop(prop)
    if native is not None:
        p = NATIVE[native]
        if p.kind == "ro":
            raise fail("%s property is read-only" % prop)
        if p.kind != "inherit" and "S" not in flags:
            err("'%s' property cannot be inherited" % prop)
            if native in ("quota", "reservation", "refquota", "refreservation"):
                err("use 'zfs set %s=none' to clear" % prop)
                err("use 'zfs inherit -S %s' to revert to received value" % prop)
            return 1
        prop = native
    elif not is_user_prop(prop):
        raise usage_err("invalid property '%s'" % prop)
    ret = 0
    with Session(host) as m:
        for name in ops[1:]:
            try:
                m.open(name)
            except Exit:
                ret = 1
                continue
            kind = "snapshot" if "@" in name else "filesystem"
            if native is not None and kind not in NATIVE[native].types:
                err("cannot inherit %s for '%s': '%s' does not apply to datasets of this type"
                    % (prop, name, prop))  # fmt: skip
                ret = 1
                continue
            targets = [name]
            if "r" in flags and "@" not in name:
                targets += m.children(name)
            for t in targets:
                m.inherit(t, prop, "S" in flags)
        if prop == "mountpoint":
            m.relocate_dirs()
    return ret


# ----------------------------------------------------------------------------- holds


def cmd_hold_release(host: Host, args, holding: bool) -> int:
    opts, ops = getopts(args, "rt" if holding else "r", colon_msgs=False)
    recursive = any(ch == "r" for ch, _ in opts)
    if len(ops) < 2:
        raise usage_err()
    tag = ops[0]
    if holding and tag.startswith("."):
        raise usage_err("tag may not start with '.'")
    errors = 0
    with Session(host) as m:
        for path in ops[1:]:
            if "@" not in path:
                err("'%s' is not a snapshot" % path)
                errors += 1
                continue
            fs, _, sn = path.partition("@")
            try:
                m.open(fs, ("filesystem", "volume"))
            except Exit:
                errors += 1
                continue
            fss = [fs] + (m.children(fs) if recursive else [])
            hits = [(f, m.find_snap(m.ds[f], sn)) for f in fss]
            hits = [(f, s) for f, s in hits if s is not None]
            if not hits:
                what = "cannot hold snapshot '%s'" if holding else (
                    "cannot release hold from snapshot '%s'")  # fmt: skip
                err((what % path) + ": dataset does not exist")
                errors += 1
                continue
            bad = False
            for f, s in hits:
                nm = "%s@%s" % (f, s["name"])
                if holding and tag in s["holds"]:
                    err("cannot hold snapshot '%s': tag already exists on this dataset" % nm)
                    bad = True
                elif not holding and tag not in s["holds"]:
                    err("cannot release hold from snapshot '%s': no such tag on this dataset"
                        % nm)  # fmt: skip
                    bad = True
            if bad:
                errors += 1
                continue
            for _f, s in hits:
                if holding:
                    s["holds"][tag] = int(time.time())
                else:
                    del s["holds"][tag]
    return 1 if errors else 0


def cmd_holds(host: Host, args) -> int:
    if zversion() < (2, 2, 0):  # `holds -p` came with 2.2 (2.1.11 refuses it: found on OpenZFS)
        ZFS_USAGE["holds"] = "\tholds [-rH] <snapshot> ...\n"
        opts, ops = getopts(args, "rH", colon_msgs=False)
    else:
        opts, ops = getopts(args, "rHp", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    if not ops:
        raise usage_err()
    errors = False
    rows = []
    with Session(host, write=False) as m:
        for path in ops:
            if "@" not in path:
                err("'%s' is not a snapshot" % path)
                errors = True
                continue
            fs, _, sn = path.partition("@")
            if "r" in flags:
                try:
                    m.open(fs, ("filesystem", "volume"))
                except Exit:
                    errors = True
                    continue
                fss = [fs, *m.children(fs)]
            else:
                try:
                    m.open(path, ("snapshot",))
                except Exit:
                    errors = True
                    continue
                fss = [fs]
            for f in fss:
                s = m.find_snap(m.ds[f], sn)
                if s is None:
                    continue
                for tag in sorted(s["holds"]):
                    t = s["holds"][tag]
                    rows.append(("%s@%s" % (f, sn), tag, t))
    if rows or not errors:
        nw = max([len(r[0]) for r in rows] + [len("NAME")])
        tw = max([len(r[1]) for r in rows] + [len("TAG")])
        out = []
        if "H" not in flags:
            out.append("%-*s  %-*s  %s" % (nw, "NAME", tw, "TAG", "TIMESTAMP"))
        for nm, tag, t in rows:
            ts = str(t) if "p" in flags else fmt_time(t, holds=True)
            if "H" in flags:
                out.append("%s\t%s\t%s" % (nm, tag, ts))
            else:
                out.append("%-*s  %-*s  %s" % (nw, nm, tw, tag, ts))
        if out:
            sys.stdout.write("\n".join(out) + "\n")
    if not rows:
        err("no datasets available")
    return 1 if errors else 0


# ----------------------------------------------------------------------------- mount


def cmd_mount(host: Host, args) -> int:
    opts, ops = getopts(args, "jflvOo:aR:")
    flags = {ch for ch, _ in opts}
    with Session(host) as m:
        if not ops and "a" not in flags:
            for n in sorted(m.ds):
                d = m.ds[n]
                if d["mounted"] and not d["inconsistent"]:
                    print("%-30s  %s" % (n, d["dir"]))
            return 0
        if "a" in flags:
            for n in sorted(m.ds):
                d = m.ds[n]
                cm = m.get_prop(n, "canmount")[0]
                if not d["inconsistent"] and cm == "on":
                    d["mounted"] = True
            return 0
        if len(ops) > 1:
            raise usage_err("too many arguments")
        name = ops[0]
        m.open(name, ("filesystem",))
        d = m.ds[name]
        if d["mounted"]:
            raise fail("cannot mount '%s': filesystem already mounted" % name)
        if d["inconsistent"]:
            raise fail("cannot mount '%s': Invalid argument" % name)
        mp = m.get_prop(name, "mountpoint")[0]
        if mp == "legacy":
            err("cannot mount '%s': legacy mountpoint" % name)
            raise fail("use mount(8) to mount this filesystem")
        if mp == "none":
            raise fail("cannot mount '%s': no mountpoint set" % name)
        d["mounted"] = True
        m.relocate_dirs()
    return 0


def cmd_unmount(host: Host, args) -> int:
    opts, ops = getopts(args, "fua", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    with Session(host) as m:
        if "a" in flags:
            for d in m.ds.values():
                d["mounted"] = False
            return 0
        if not ops:
            raise usage_err("missing filesystem argument")
        if len(ops) > 1:
            raise usage_err("too many arguments")
        name = ops[0]
        if name.startswith("/"):
            for n, d in m.ds.items():
                if d["dir"] == os.path.normpath(name) and d["mounted"]:
                    name = n
                    break
            else:
                raise fail("cannot unmount '%s': not a mountpoint" % name)
        m.open(name, ("filesystem",))
        d = m.ds[name]
        if not d["mounted"] or d["inconsistent"]:
            raise fail("cannot unmount '%s': not currently mounted" % name)
        d["mounted"] = False
    return 0


# ----------------------------------------------------------------------------- diff


def cmd_diff(host: Host, args) -> int:
    opts, ops = getopts(args, "FHth", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    if not ops:
        raise usage_err("must provide at least one snapshot name")
    if len(ops) > 2:
        raise usage_err("too many arguments")
    a = ops[0]
    b = ops[1] if len(ops) > 1 else None
    with Session(host, write=False) as m:
        if "@" not in a:
            raise fail("Badly formed snapshot name %s: missing '@' delimiter in snapshot name" % a)
        m.open(a, ("snapshot",))
        fs = a.split("@")[0]
        if b is None:
            b = fs
        elif b.startswith("@"):
            b = fs + b
        m.open(b)
        if b.split("@")[0] != fs:
            raise fail(
                "Unable to determine which snapshots to compare: operation crosses datasets "
                "or pools"
            )
        old = m.snap_manifest(m.obj(a))
        new = m.snap_manifest(m.obj(b)) if "@" in b else m.live(fs)
        if "@" in b:
            sa, sb = m.obj(a), m.obj(b)
            if sb["createtxg"] < sa["createtxg"]:
                raise fail("Unable to determine path or stats for object 0 in %s: "
                           "Invalid argument" % b)  # fmt: skip
        top = m.ds[fs]["dir"]
    lines = []
    dirs_touched = set()
    for r in sorted(set(old) | set(new)):
        eo, en = old.get(r), new.get(r)
        if eo == en:
            continue
        if eo is None:
            ch = "+"
        elif en is None:
            ch = "-"
        elif eo[0] != en[0]:
            lines.append((r, "-", eo))
            ch = "+"
            eo = None
        else:
            ch = "M"
        if ch in "+-":
            dirs_touched.add(r.rsplit("/", 1)[0] if "/" in r else "")
        if ch == "M" and en[0] == "d":
            continue
        lines.append((r, ch, en or eo))
    for dr in dirs_touched:
        if dr == "" or (dr in old and dr in new):
            lines.append((dr, "M", ["d"]))
    lines.sort(key=lambda x: (x[0], x[1]))
    out = []
    for r, ch, e in lines:
        path = os.path.join(top, r) if r else top + "/"
        ftype = {"f": "F", "d": "/", "l": "@"}[e[0]]
        cols = [ch]
        if "F" in flags:
            cols.append(ftype)
        cols.append(path)
        out.append("\t".join(cols))
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0


# ----------------------------------------------------------------------------- stream format
#
# A stream is MAGIC then records: 4-byte tag, 8-byte big-endian length, payload.
#   HEAD json  {sendfs, props, replicate, resume, package, fss (fs props, snapshot guids and
#              snapshot props, for -p/-R)}
#   per snapshot: SNAP json {toname, toguid, fromguid, fromname, creation, manifest (the full
#                 {relpath: entry} of the snapshot), objects ([sha256, size] of the contents the
#                 receiver cannot have: not in the from-snapshot), resume_obj, resume_off},
#                 then one DATA record per object (raw bytes, from resume_off for the first
#                 one of a resumed stream), then SEND json {"crc": crc32 of the section}
#   END! json {"crc": crc32 of everything before END!, "sections": n}: only in "package"
#              streams (-R, -I, -p), as OpenZFS ends those with an END record
# A receiver commits each snapshot when its SEND trailer checks out; EOF anywhere before that
# is a cut stream (with -s: partial state + resume token at object/offset granularity).

MAGIC = b"ZFS-STANDIN-STREAM v1\n"
REC = struct.Struct(">4sQ")


def jdump(obj) -> bytes:
    return jdumps(obj, sort_keys=True, separators=(",", ":")).encode()


def section_plan(m: Model, fs: str, s: dict, from_s: dict | None) -> dict:
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
    return {
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


class Progress:
    """OpenZFS's once-a-second progress lines on stderr."""

    def __init__(self, w: Writer, parsable: bool, verbosity: int):
        self.w = w
        self.parsable = parsable
        self.verbosity = verbosity
        self.name = None
        self.base = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start_section(self, name: str) -> None:
        self.name = name
        self.base = self.w.total
        if not self.parsable:
            sys.stderr.write("TIME        SENT   SNAPSHOT %s\n" % name)
            sys.stderr.flush()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            if self.name is None:
                continue
            now = time.strftime("%H:%M:%S")
            done = self.w.total - self.base
            if self.parsable:
                line = "%s\t%d\t%s\n" % (now, done, self.name)
            else:
                line = "%s   %5s   %s\n" % (now, nicenum(done), self.name)
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(2)
        return False


# ----------------------------------------------------------------------------- resume tokens


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


# ----------------------------------------------------------------------------- zfs send

SEND_LONG = {
    "replicate": ("R", False), "skip-missing": ("s", False), "redact": ("d", True),
    "props": ("p", False), "parsable": ("P", False), "dedup": ("D", False),
    "proctitle": ("V", False), "verbose": ("v", False), "dryrun": ("n", False),
    "large-block": ("L", False), "embed": ("e", False), "resume": ("t", True),
    "compressed": ("c", False), "raw": ("w", False), "backup": ("b", False),
    "holds": ("h", False), "saved": ("S", False), "exclude": ("X", True),
}  # fmt: skip


def snapshot_props_for_stream(m: Model, obj: dict) -> dict:
    out = {}
    for k, v in obj.get("received", {}).items():
        if k not in obj.get("mask", []):
            out[k] = v
    out.update(obj.get("local", {}))
    return out


def fs_stream_props(m: Model, fs: str) -> dict:
    d = m.ds[fs]
    out = {}
    for k, v in d.get("received", {}).items():
        if k not in d.get("mask", []):
            out[k] = v
    out.update(d.get("local", {}))
    return out


def cmd_send(host: Host, args) -> int:
    opts, ops = getopts(args, "i:I:RsDpVvnPLeht:cwbd:SX:", SEND_LONG)
    f = {"verbosity": 0}
    inc = None
    doall = False
    token = None
    for ch, val in opts:
        if ch == "i":
            if inc is not None:
                raise usage_err("invalid option combination: -i and -I are mutually "
                                "exclusive")  # fmt: skip
            inc = val
        elif ch == "I":
            if inc is not None:
                raise usage_err("invalid option combination: -i and -I are mutually "
                                "exclusive")  # fmt: skip
            inc = val
            doall = True
        elif ch == "v":
            f["verbosity"] += 1
        elif ch == "t":
            token = val
        elif ch == "D":
            err("WARNING: deduplicated send is no longer supported.  A regular,\n"
                "non-deduplicated stream will be generated.\n")  # fmt: skip
        elif ch in ("d", "S", "X"):
            raise fail("zfs stand-in: send -%s is not modelled" % ch)
        else:
            f[ch] = True
    dry = f.get("n", False)
    parsable = f.get("P", False)
    verbosity = f["verbosity"]
    replicate = f.get("R", False)
    props = f.get("p", False) or replicate
    if token is not None:
        if replicate or f.get("p") or inc is not None or f.get("h") or f.get("b"):
            raise usage_err("invalid flags combined with -t")
        if ops:
            raise usage_err("too many arguments")
    else:
        if not ops:
            raise usage_err("missing snapshot argument")
        if len(ops) > 1:
            raise usage_err("too many arguments")
    if not dry and os.isatty(1):
        raise fail(
            "Error: Stream can not be written to a terminal.\nYou must redirect standard output."
        )
    if token is not None:
        return send_resume(host, token, dry, parsable, verbosity)
    target = ops[0]
    with Session(host, write=False) as m:
        if "@" not in target:
            m.open(target)
            raise fail("warning: cannot send '%s': target is busy; if a filesystem, it must "
                       "not be mounted" % target)  # fmt: skip
        if not (replicate or doall):
            fromname = None
            if inc is not None:
                fromname = inc
                if "@" not in fromname and "#" not in fromname:
                    err("Warning: incremental source didn't specify type, assuming snapshot. "
                        "Use '@' or '#' prefix to avoid ambiguity.")  # fmt: skip
                    fromname = "@" + fromname
                if fromname.startswith("@"):
                    fromname = target.split("@")[0] + fromname
                if "#" in fromname:
                    raise fail("zfs stand-in: bookmarks are not modelled")
            m.open(target)
            fs = target.split("@")[0]
            d, s = m.snap(target)
            from_s = None
            if fromname is not None:
                m.open(fromname)
                fd_, from_s = m.snap(fromname)
                if fd_ is not d or from_s["createtxg"] >= s["createtxg"]:
                    raise fail("warning: cannot send '%s': not an earlier snapshot from the "
                               "same fs" % target)  # fmt: skip
            plans = [(fs, section_plan(m, fs, s, from_s), fromname)]
            fss = build_fss(m, [fs]) if props else None
        else:
            fs = target.split("@")[0]
            m.open(fs, ("filesystem", "volume"))
            tosnap = target.split("@", 1)[1]
            fromsnap = None
            if inc is not None:
                fi = inc
                if "@" in fi and not fi.startswith("@") and fi.split("@")[0] != fs:
                    raise usage_err("incremental source must be in same filesystem")
                if "@" in fi:
                    fi = fi.split("@", 1)[1]
                if "@" in fi or "/" in fi:
                    raise usage_err("invalid incremental source")
                fromsnap = fi
            if fromsnap is not None:
                m.open("%s@%s" % (fs, fromsnap), ("snapshot",))
            fslist = [fs] + (m.children(fs) if replicate else [])
            _d0, s0 = m.snap(target)
            if s0 is None:
                m.open(target)
            plans = []
            failed = False
            for f_ in fslist:
                d = m.ds[f_]
                to_s = m.find_snap(d, tosnap)
                if to_s is None:
                    if f_ != fs and d["createtxg"] > s0["createtxg"]:
                        continue
                    rec = " recursively" if replicate else ""
                    err("cannot send %s@%s%s: snapshot %s@%s does not exist"
                        % (fs, tosnap, rec, f_, tosnap))  # fmt: skip
                    return 1
                snaps = [x for x in d["snaps"] if x["createtxg"] <= to_s["createtxg"]]
                start = None
                if fromsnap is not None:
                    from_s = m.find_snap(d, fromsnap)
                    if from_s is None:
                        if replicate and f_ != fs:
                            start = None  # full from the beginning
                        else:
                            err("WARNING: could not send %s@%s:\nincremental source (%s@%s) "
                                "does not exist" % (f_, tosnap, f_, fromsnap))  # fmt: skip
                            failed = True
                            continue
                    elif from_s["createtxg"] >= to_s["createtxg"]:
                        err("WARNING: could not send %s@%s:\nincremental source (%s@%s) is not "
                            "earlier than it" % (f_, tosnap, f_, fromsnap))  # fmt: skip
                        failed = True
                        continue
                    else:
                        start = from_s
                if start is not None:
                    chain = [x for x in snaps if x["createtxg"] > start["createtxg"]]
                    if not doall:
                        chain = [to_s]
                else:
                    chain = snaps if (replicate or doall) else [to_s]
                prev = start
                for x in chain:
                    plans.append((f_, section_plan(m, f_, x, prev), prev["name"] if prev else None))
                    prev = x
            if failed:
                return 1
            fss = build_fss(m, fslist) if props else None
        head = {
            "sendfs": fs,
            "props": props,
            "replicate": replicate,
            "resume": False,
            "fss": fss,
            "toname": target,
            # like OpenZFS, -R/-I/-p streams are a "package" with an END record after the
            # snapshot streams; a plain stream is one snapshot stream and nothing after it
            "package": bool(replicate or doall or props),
        }
    return run_send(host, head, plans, dry, parsable, verbosity)


def build_fss(m: Model, fslist: list) -> dict:
    out = {}
    for f_ in fslist:
        d = m.ds[f_]
        out[f_] = {
            "guid": d["guid"],
            "props": fs_stream_props(m, f_),
            "snaps": {s["name"]: s["guid"] for s in d["snaps"]},
            "snapprops": {s["name"]: snapshot_props_for_stream(m, s) for s in d["snaps"]},
        }
    return out


def run_send(host, head, plans, dry, parsable, verbosity) -> int:
    out = sys.stdout if dry else sys.stderr
    total = 0
    lines = []
    for _fs, sec, fromname in plans:
        size = section_size(sec)
        total += size
        shown_from = fromname  # -I/-R name it short, -i by its full name (as OpenZFS)
        if parsable:
            if shown_from is not None:
                lines.append("incremental\t%s\t%s\t%d" % (shown_from, sec["toname"], size))
            else:
                lines.append("full\t%s\t%d" % (sec["toname"], size))
        else:
            if shown_from is not None:
                pre = "send from @%s to %s" if "@" not in shown_from else "send from %s to %s"
                ln = pre % (shown_from, sec["toname"])
            else:
                ln = "full send of %s" % sec["toname"]
            if size:
                ln += " estimated size is %s" % nicenum(size)
            lines.append(ln)
    if verbosity:
        for ln in lines:
            out.write(ln + "\n")
        if parsable:
            out.write("size\t%d\n" % total)
        else:
            out.write("total estimated size is %s\n" % nicenum(total))
        out.flush()
    if dry:
        return 0
    tag = hold_for_send(host, plans)
    try:
        return stream_out(host, head, plans, parsable, verbosity)
    finally:
        release_send_holds(host, tag)


def hold_for_send(host: Host, plans) -> str:
    """OpenZFS keeps what it sends from being destroyed while the stream runs (temporary
    `.send-<pid>-<n>` holds, or the kernel's hold on the dataset): model both with a
    temporary hold, dropped at the end or when the sending process is gone."""
    tag = ".send-%d-1" % os.getpid()
    with Session(host) as m:
        for fs, sec, _from in plans:
            d = m.ds.get(fs)
            for g in (sec["toguid"], sec["fromguid"]):
                if not g:
                    continue
                s = None
                for x in d["snaps"] if d else []:
                    if x["guid"] == g:
                        s = x
                if s is None:
                    raise fail("warning: cannot send '%s': dataset does not exist" % sec["toname"])
                s["holds"][tag] = int(time.time())
    return tag


def release_send_holds(host: Host, tag: str) -> None:
    with Session(host) as m:
        for d in m.ds.values():
            for s in d["snaps"]:
                s["holds"].pop(tag, None)


def stream_out(host: Host, head: dict, plans, parsable: bool, verbosity: int) -> int:
    w = Writer(1)
    try:
        w.write(MAGIC)
        w.record(b"HEAD", jdump(head))
        prog = Progress(w, parsable, verbosity) if verbosity else None
        if prog:
            prog.__enter__()
        try:
            for _fs, sec, _from in plans:
                if prog:
                    prog.start_section(sec["toname"])
                emit_section(host, w, sec)
        finally:
            if prog:
                prog.__exit__()
        crc = w.crc
        if head["package"]:
            w.record(b"END!", jdump({"crc": "%08x" % crc, "sections": len(plans)}))
    except BrokenPipeError:
        # the C zfs dies of SIGPIPE when the reader goes away; do the same (the temporary
        # holds are dropped by the next call that finds this process gone)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
        return 1
    return 0


def send_resume(host: Host, token: str, dry: bool, parsable: bool, verbosity: int) -> int:
    tok, problem = token_decode(token)
    if tok is None:
        raise fail("cannot resume send: %s" % problem)
    out = sys.stdout if (verbosity and dry) else sys.stderr
    if verbosity:
        out.write("resume token contents:\nnvlist version: 0\n")
        if tok.get("fromguid"):
            out.write("\tfromguid = 0x%x\n" % tok["fromguid"])
        out.write("\tobject = 0x%x\n" % tok["object"])
        out.write("\toffset = 0x%x\n" % tok["offset"])
        out.write("\tbytes = 0x%x\n" % tok["bytes"])
        out.write("\ttoguid = 0x%x\n" % tok["toguid"])
        out.write("\ttoname = %s\n" % tok["toname"])
    with Session(host, write=False) as m:
        toname = tok["toname"]
        fs = toname.split("@")[0]
        d = m.ds.get(fs)
        s = None
        if d is not None:
            for x in d["snaps"]:
                if x["guid"] == tok["toguid"]:
                    s = x
        if s is None:
            if m.exists(toname):
                raise fail("cannot resume send: '%s' is no longer the same snapshot used in "
                           "the initial send" % toname)  # fmt: skip
            raise fail("cannot resume send: '%s' used in the initial send no longer exists"
                       % toname)  # fmt: skip
        from_s = None
        if tok.get("fromguid"):
            for x in d["snaps"]:
                if x["guid"] == tok["fromguid"]:
                    from_s = x
            if from_s is None:
                raise fail("cannot resume send: incremental source %#x no longer exists"
                           % tok["fromguid"])  # fmt: skip
        sec = section_plan(m, fs, s, from_s)
        sec["resume_obj"] = tok["object"]
        sec["resume_off"] = tok["offset"]
        fromname = "%s@%s" % (fs, from_s["name"]) if from_s else None
        head = {"sendfs": fs, "props": False, "replicate": False, "resume": True, "fss": None,
                "toname": "%s@%s" % (fs, s["name"]), "package": False}  # fmt: skip
    return run_send(host, head, [(fs, sec, fromname)], dry, parsable, verbosity)


# ----------------------------------------------------------------------------- zfs receive


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

    def record(self, want: bytes | None = None):
        hdr = self.read_exact(REC.size)
        tag, ln = REC.unpack(hdr)
        if want is not None and tag != want:
            raise ValueError("unexpected record %r" % tag)
        if tag == b"DATA":
            return tag, ln
        return tag, self.read_exact(ln)


RECV_ERRS = {"new": "cannot receive new filesystem stream",
             "inc": "cannot receive incremental stream",
             "resume": "cannot receive resume stream"}  # fmt: skip


def cmd_receive(host: Host, args) -> int:
    opts, ops = getopts(args, "o:x:dehMnuvFsAc")
    fl = {}
    cmdprops = {}
    excludes = []
    for ch, val in opts:
        if ch == "o":
            k, eq, v = val.partition("=")
            if not eq:
                err("missing '=' for property=value argument")
                raise usage_err()
            if k in cmdprops or k in excludes:
                err("property '%s' specified multiple times" % k)
                raise usage_err()
            cmdprops[k] = v
        elif ch == "x":
            if val in cmdprops or val in excludes:
                err("property '%s' specified multiple times" % val)
                raise usage_err()
            excludes.append(val)
        elif ch == "d":
            if fl.get("e"):
                raise usage_err("invalid option combination: -d and -e are mutually exclusive")
            fl["d"] = True
        elif ch == "e":
            if fl.get("d"):
                raise usage_err("invalid option combination: -d and -e are mutually exclusive")
            fl["e"] = True
        elif ch == "c":
            raise fail("zfs stand-in: corrective receive (-c) is not modelled")
        else:
            fl[ch] = True
    if not ops:
        raise usage_err("missing snapshot argument")
    if len(ops) > 1:
        raise usage_err("too many arguments")
    target = ops[0]
    if fl.get("A"):
        if fl.get("d") or fl.get("e") or fl.get("n") or fl.get("s") or fl.get("u"):
            raise usage_err("invalid option")
        return recv_abort(host, target)
    if os.isatty(0):
        raise fail(
            "Error: Backup stream can not be read from a terminal.\n"
            "You must redirect standard input."
        )
    for k in list(cmdprops) + excludes:
        if canon_prop(k) is None and not is_user_prop(k):
            raise fail("cannot receive: invalid property '%s'" % k)
    r = Reader(0)
    try:
        magic = r.read_exact(len(MAGIC))
    except Truncated:
        raise fail("cannot receive: failed to read from stream") from None
    if magic != MAGIC:
        raise fail("cannot receive: invalid stream (bad magic number)")
    try:
        _tag, head_raw = r.record(b"HEAD")
        head = jloads(head_raw)
    except Truncated:
        raise fail("cannot receive: failed to read from stream") from None
    except ValueError:
        raise fail("cannot receive: invalid stream (bad magic number)") from None
    rx = Receiver(host, r, head, target, fl, cmdprops, excludes)
    return rx.run()


def recv_abort(host: Host, target: str) -> int:
    with Session(host) as m:
        m.open(target, ("filesystem", "volume"))
        d = m.ds[target]
        if not d.get("partial"):
            raise fail("'%s' does not have any resumable receive state to abort" % target)
        if d["partial"].get("newfs"):
            m.remove_fs(target)
        else:
            m._drop_partial_files(d)
            d["partial"] = None
    return 0


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


def widen_pipe(fd: int) -> None:
    """Fewer, larger reads and writes through the pipe between send and recv."""
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)


class Receiver:
    def __init__(self, host, reader, head, target, fl, cmdprops, excludes):
        self.host = host
        self.r = reader
        self.head = head
        self.target = target
        self.fl = fl
        self.cmdprops = cmdprops
        self.excludes = excludes
        self.top = None
        self.prewritten: dict = {}

    def dest_for(self, toname: str) -> str:
        sendfs = self.head["sendfs"]
        t = self.target
        if self.fl.get("e"):
            if "@" in t:
                raise fail("cannot receive: invalid argument - snapshot not allowed with -e")
            tail = sendfs.rsplit("/", 1)[-1]
            rest = toname[len(sendfs) :]
            return t + "/" + tail + rest
        if self.fl.get("d"):
            if "@" in t:
                raise fail("cannot receive: invalid argument - snapshot not allowed with -d")
            i = toname.find("/")
            rest = toname[i:] if i >= 0 else toname[toname.find("@") :]
            return t + rest
        if "@" not in t:
            return t + toname[len(sendfs) :]
        if self.head.get("replicate"):
            raise fail("cannot receive: cannot specify snapshot name for multi-snapshot stream")
        return t

    def run(self) -> int:
        n = 0
        while True:
            crc_before = self.r.crc
            try:
                hdr = self.r.read_exact(REC.size)
            except Truncated:
                raise fail("cannot receive: failed to read from stream") from None
            tag, ln = REC.unpack(hdr)
            if tag == b"END!":
                try:
                    payload = jloads(self.r.read_exact(ln))
                except Truncated:
                    raise fail("cannot receive: failed to read from stream") from None
                if payload.get("sections") != n or payload.get("crc") != "%08x" % crc_before:
                    raise fail("cannot receive: invalid backup stream")
                break
            if tag != b"SNAP":
                raise fail("cannot receive: invalid record type")
            self.r.sec_crc = zlib.crc32(hdr)
            try:
                sec = jloads(self.r.read_exact(ln))
            except Truncated:
                raise fail("cannot receive: failed to read from stream") from None
            if n == 0:
                self.replication_prune(sec)
            self.section(sec)
            n += 1
            if not self.head.get("package", True):
                return 0  # a plain stream ends with its snapshot's trailer
        return 0

    def replication_prune(self, sec: dict) -> None:
        """recv -F of an incremental -R stream: destroy what the source no longer has."""
        if not (self.head.get("replicate") and self.fl.get("F") and sec["fromguid"]):
            return
        fss = self.head.get("fss") or {}
        if self.fl.get("n"):
            return
        with Session(self.host) as m:
            top = self.dest_for(self.head["sendfs"] + "@x").split("@")[0]
            if top not in m.ds:
                return
            wanted = {self.dest_for(f + "@x").split("@")[0]: e for f, e in fss.items()}
            for name in [top, *m.children(top)]:
                if name not in m.ds:
                    continue
                e = wanted.get(name)
                if e is None:
                    tree = [name, *m.children(name)]
                    if any(s["holds"] for x in tree for s in m.ds[x]["snaps"]):
                        continue
                    for x in sorted(tree, reverse=True):
                        m.remove_fs(x)
                    continue
                guids = set(e["snaps"].values())
                d = m.ds[name]
                d["snaps"] = [s for s in d["snaps"] if s["guid"] in guids or s["holds"]]

    def section(self, sec: dict) -> None:
        resume = bool(self.head.get("resume"))
        toname = sec["toname"]
        destsnap = self.dest_for(toname)
        fsname, _, snapname = destsnap.partition("@")
        prob = name_problem(destsnap, True, True)
        if prob:
            raise fail("cannot receive: %s" % prob)
        fromguid = sec["fromguid"]
        wants_new = fromguid == 0 and not resume
        kind = "resume" if resume else ("new" if fromguid == 0 else "inc")
        errbuf = RECV_ERRS[kind]
        fss_entry = None
        if self.head.get("fss"):
            srcfs = toname.split("@")[0]
            fss_entry = self.head["fss"].get(srcfs)
        verbose = self.fl.get("v")
        dry = self.fl.get("n")
        force = self.fl.get("F")
        # ---- pre-checks (under the lock), decide the plan
        with Session(self.host, write=False) as m:
            plan = self.check(m, sec, fsname, snapname, errbuf, wants_new, resume, force)
        if plan == "skip":
            if verbose:
                print("snap %s already exists; ignoring" % destsnap)
                sys.stdout.flush()
            self.skip_data(sec)
            return
        if verbose:
            print("%s %s stream of %s into %s" % ("would receive" if dry else "receiving",
                  "incremental" if fromguid else "full", toname, destsnap))  # fmt: skip
            sys.stdout.flush()
        if dry:
            self.skip_data(sec)
            return
        # ---- data
        partial = plan.get("partial")
        try:
            self.receive_section(sec, fsname, snapname, errbuf, partial, fss_entry, wants_new,
                                 resume, force)  # fmt: skip
        finally:
            self.drop_prewritten()

    def receive_section(self, sec, fsname, snapname, errbuf, partial, fss_entry, wants_new,
                        resume, force):  # fmt: skip
        self.receive_data(sec, fsname, errbuf, partial, fss_entry)
        # ---- trailer
        sec_crc = self.r.sec_crc
        try:
            _t, payload = self.r.record(b"SEND")
        except Truncated:
            self.truncated(sec, fsname, errbuf, len(sec["objects"]), 0, fss_entry, partial)
        if jloads(payload).get("crc") != "%08x" % sec_crc:
            raise fail("%s: checksum mismatch" % errbuf)
        # ---- commit
        with Session(self.host) as m:
            plan = self.check(m, sec, fsname, snapname, errbuf, wants_new, resume, force,
                              committing=True)  # fmt: skip
            if plan == "skip":
                return
            self.commit(m, sec, fsname, snapname, plan, fss_entry)

    # -- validation shared by pre-check and commit
    def check(self, m, sec, fsname, snapname, errbuf, wants_new, resume, force,
              committing=False):  # fmt: skip
        plan = {}
        # A resumable receive needs feature@extensible_dataset (dmu_recv_begin_check: ENOTSUP,
        # which libzfs words as below); `zpool create -d` leaves it disabled.
        if self.fl.get("s") and m.st["pools"].get(pool_of(fsname), {}).get("features_disabled"):
            raise fail("%s: pool must be upgraded to receive this stream." % errbuf)
        exists = fsname in m.ds
        if exists:
            d = m.ds[fsname]
            if wants_new:
                if not force:
                    raise fail("%s: destination '%s' exists\nmust specify -F to overwrite it"
                               % (errbuf, fsname))  # fmt: skip
                if d["snaps"]:
                    first = "%s@%s" % (fsname, d["snaps"][0]["name"])
                    raise fail("%s: destination has snapshots (eg. %s)\nmust destroy them to "
                               "overwrite it" % (errbuf, first))  # fmt: skip
            if resume:
                p = d.get("partial")
                if (
                    not p
                    or p["toguid"] != sec["toguid"]
                    or p["fromguid"] != sec["fromguid"]
                    or (not committing and (p["object"] != sec["resume_obj"]
                                            or p["offset"] != sec["resume_off"]))
                ):  # fmt: skip
                    if self.fl.get("s"):
                        raise fail("%s: kernel modules must be upgraded to receive this stream."
                                   % errbuf)  # fmt: skip
                    raise fail("%s: invalid backup stream" % errbuf)
                if sec["fromguid"] == 0 and not p.get("newfs") and not force:
                    raise fail("%s: Resuming recv on existing destination '%s'\nmust specify "
                               "-F to overwrite it" % (errbuf, fsname))  # fmt: skip
                plan["partial"] = p
                plan["newfs"] = bool(p.get("newfs"))
                plan["from"] = None
                if sec["fromguid"]:
                    for s in d["snaps"]:
                        if s["guid"] == sec["fromguid"]:
                            plan["from"] = s
                    if plan["from"] is None:
                        raise fail("%s: most recent snapshot of %s does not\nmatch incremental "
                                   "source" % (errbuf, fsname))  # fmt: skip
                    plan["destroy"] = [s for s in d["snaps"]
                                       if s["createtxg"] > plan["from"]["createtxg"]]  # fmt: skip
                return plan
            if d.get("partial"):
                raise fail('%s: destination %s contains partially-complete state from "zfs '
                           'receive -s".' % (errbuf, fsname))  # fmt: skip
            if m.find_snap(d, snapname) is not None:
                if any(x["guid"] == sec["toguid"] for x in d["snaps"]):
                    return "skip"
                raise fail("cannot restore to %s@%s: destination already exists"
                           % (fsname, snapname))  # fmt: skip
            if wants_new:
                plan["newfs"] = False
                plan["replace"] = True
                return plan
            # incremental
            from_s = None
            for s in d["snaps"]:
                if s["guid"] == sec["fromguid"]:
                    from_s = s
            if from_s is None:
                raise fail("%s: most recent snapshot of %s does not\nmatch incremental source"
                           % (errbuf, fsname))  # fmt: skip
            newer = [s for s in d["snaps"] if s["createtxg"] > from_s["createtxg"]]
            if not force:
                if m.modified_since(fsname, from_s):
                    raise fail("%s: destination %s has been modified\nsince most recent "
                               "snapshot" % (errbuf, fsname))  # fmt: skip
                newer = []
            elif committing:
                for s in newer:
                    if s["holds"]:
                        raise fail("%s: dataset is busy" % errbuf)
            plan["from"] = from_s
            plan["destroy"] = newer
            plan["newfs"] = False
            return plan
        # destination does not exist
        if resume or not wants_new or "/" not in fsname:
            raise fail("%s: destination '%s' does not exist" % (errbuf, fsname))
        par = parent_of(fsname)
        if par not in m.ds and not (self.fl.get("d") and pool_of(par) in m.st["pools"]):
            err("cannot open '%s': dataset does not exist" % par)
            raise fail("%s: unable to restore to destination" % errbuf)
        plan["newfs"] = True
        plan["create_parents"] = par not in m.ds
        return plan

    def skip_data(self, sec: dict) -> None:
        try:
            for i, (_sha, _size) in enumerate(sec["objects"]):
                if i < sec["resume_obj"]:
                    continue
                _t, ln = self.r.record(b"DATA")
                left = ln
                while left:
                    b = os.read(self.r.fd, min(left, CHUNK))
                    if not b:
                        raise Truncated()
                    self.r.sec_crc = zlib.crc32(b, self.r.sec_crc)
                    left -= len(b)
            sec_crc = self.r.sec_crc
            _t, payload = self.r.record(b"SEND")
            if jloads(payload).get("crc") != "%08x" % sec_crc:
                raise fail("cannot receive: checksum mismatch")
        except Truncated:
            raise fail("cannot receive: failed to read from stream") from None

    def receive_data(self, sec, fsname, errbuf, partial, fss_entry):
        host = self.host
        start_obj = sec["resume_obj"]
        for i, (sha, size) in enumerate(sec["objects"]):
            if i < start_obj:
                continue
            off = sec["resume_off"] if i == start_obj else 0
            try:
                hdr = self.r.read_exact(REC.size)
            except Truncated:
                self.truncated(sec, fsname, errbuf, i, 0, fss_entry, partial)
            tag, ln = REC.unpack(hdr)
            if tag != b"DATA" or ln != size - off:
                raise fail("%s: invalid backup stream" % errbuf)
            tmp = None
            h = None
            if not host.has_obj(sha):
                tmp = host.tmpfile()
                h = hashlib.sha256()
                stage = partial.get("stage") if (off and partial) else None
                if stage:
                    shutil.copyfile(os.path.join(host.partdir, stage), tmp)
                    with open(tmp, "rb") as fh:
                        while True:
                            b = fh.read(CHUNK)
                            if not b:
                                break
                            h.update(b)
                elif off:
                    raise fail("%s: invalid backup stream" % errbuf)
            out = None
            if tmp:
                out = open(tmp, "r+b" if off else "wb")  # noqa: SIM115 (closed below)
                preallocate(out.fileno(), size)
                out.seek(off)
            side = SideWriter(host.tmpfile(), size) if off == 0 else None
            got = off
            left = ln
            try:
                while left:
                    b = os.read(self.r.fd, min(left, CHUNK))
                    if not b:
                        break
                    self.r.sec_crc = zlib.crc32(b, self.r.sec_crc)
                    if side:
                        side.put(b)
                    if out:
                        out.write(b)
                        if not side:
                            h.update(b)
                    left -= len(b)
                    got += len(b)
            finally:
                if out:
                    out.truncate(got)
                    out.close()
                if side and left:
                    side.discard()
            if left:
                # cut inside this object: keep its bytes for a resume
                stagefile = None
                if tmp and got:
                    stagefile = "%s.part" % os.urandom(8).hex()
                    os.replace(tmp, os.path.join(host.partdir, stagefile))
                elif tmp:
                    os.unlink(tmp)
                self.truncated(sec, fsname, errbuf, i, got, fss_entry, partial, stagefile)
            digest = side.close() if side else h.hexdigest() if h else sha
            if digest != sha or (tmp and os.path.getsize(tmp) != size):
                if tmp:
                    os.unlink(tmp)
                if side:
                    os.unlink(side.path)
                raise fail("%s: checksum mismatch" % errbuf)
            if tmp:
                host.commit_obj(tmp, sha)
            if side:
                self.prewritten[sha] = side.path

    def drop_prewritten(self) -> None:
        for path in self.prewritten.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.prewritten.clear()

    def truncated(self, sec, fsname, errbuf, obj, off, fss_entry, partial, stagefile=None):
        resumable = self.fl.get("s")
        if not resumable:
            if stagefile:
                os.unlink(os.path.join(self.host.partdir, stagefile))
            raise fail("%s: incomplete stream" % errbuf)
        with Session(self.host) as m:
            exists = fsname in m.ds
            newfs = (not exists) if partial is None else bool(partial.get("newfs"))
            if not exists:
                if "/" not in fsname or parent_of(fsname) not in m.ds:
                    raise fail("%s: incomplete stream" % errbuf)
                d = m.new_fs(fsname)
                d["inconsistent"] = True
                d["mounted"] = False
                if fss_entry is not None:
                    self.apply_fs_props(m, fsname, fss_entry["props"], toplevel=True)
            d = m.ds[fsname]
            old = d.get("partial")
            if old and old.get("stage") and old["stage"] != stagefile:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.host.partdir, old["stage"]))
            bytes_done = sum(sz for _s, sz in sec["objects"][:obj]) + off
            if fss_entry:
                props = fss_entry.get("props")
                snapprops = (fss_entry.get("snapprops") or {}).get(sec["toname"].split("@")[1])
            else:
                props = (partial or {}).get("props")
                snapprops = (partial or {}).get("snapprops")
            payload = {
                "toname": sec["toname"],
                "toguid": sec["toguid"],
                "fromguid": sec["fromguid"],
                "object": obj,
                "offset": off,
                "bytes": bytes_done,
            }
            if sec["fromguid"] == 0:
                payload.pop("fromguid")
            tok = token_encode(dict(payload, nonce=os.urandom(4).hex()))
            d["partial"] = {
                "newfs": newfs,
                "toguid": sec["toguid"],
                "fromguid": sec["fromguid"],
                "toname": sec["toname"],
                "object": obj,
                "offset": off,
                "stage": stagefile,
                "token": tok,
                "props": props,
                "snapprops": snapprops,
            }
        raise fail(
            "%s: checksum mismatch or incomplete stream.\n"
            "Partially received snapshot is saved.\n"
            "A resuming stream can be generated on the sending system by running:\n"
            "    zfs send -t %s" % (errbuf, tok)
        )

    def apply_fs_props(self, m, fsname, props, toplevel):
        d = m.ds[fsname]
        d["received"] = {}
        for k, v in (props or {}).items():
            d["received"][k] = v
        d["hasrecvd"] = True
        for k in self.excludes:
            ck = canon_prop(k) or k
            if ck in d.get("local", {}):
                continue
            if ck not in d["mask"]:
                d["mask"].append(ck)
        if toplevel:
            for k, v in self.cmdprops.items():
                ck, cv = m.validate_set(fsname, k, v, "cannot receive")
                m.set_local(fsname, ck, cv)

    def commit(self, m, sec, fsname, snapname, plan, fss_entry):
        host = self.host
        is_top = self.top is None or self.top == fsname
        if self.top is None:
            self.top = fsname
        partial = plan.get("partial")
        if plan.get("newfs") and fsname not in m.ds:
            if plan.get("create_parents"):
                missing = []
                cur = parent_of(fsname)
                while cur not in m.ds:
                    missing.append(cur)
                    cur = parent_of(cur)
                for p in reversed(missing):
                    m.new_fs(p)
            m.new_fs(fsname)
            m.ds[fsname]["mounted"] = not self.fl.get("u")
        d = m.ds[fsname]
        if partial is not None:
            if partial.get("newfs"):
                d["inconsistent"] = False
                d["mounted"] = not self.fl.get("u")
            m._drop_partial_files(d)
            d["partial"] = None
            if fss_entry is None and partial.get("props") is not None:
                fss_entry = {"props": partial["props"], "snapprops": {}}
                if partial.get("snapprops") is not None:
                    fss_entry["snapprops"] = {snapname: partial["snapprops"]}
        for s in plan.get("destroy", []) or []:
            d["snaps"].remove(s)
        if fss_entry is not None:
            self.apply_fs_props(m, fsname, fss_entry.get("props"), toplevel=is_top)
        elif is_top and self.cmdprops:
            for k, v in self.cmdprops.items():
                ck, cv = m.validate_set(fsname, k, v, "cannot receive")
                m.set_local(fsname, ck, cv)
        elif is_top and self.excludes:
            for k in self.excludes:
                ck = canon_prop(k) or k
                if ck not in d.get("local", {}) and ck not in d["mask"]:
                    d["mask"].append(ck)
        mid = host.put_manifest(sec["manifest"])
        snap = {
            "name": snapname,
            "guid": sec["toguid"],
            "createtxg": m.next_txg(),
            "creation": sec["creation"],
            "manifest": mid,
            "local": {},
            "received": {},
            "mask": [],
            "holds": {},
        }
        if fss_entry is not None:
            sp = (fss_entry.get("snapprops") or {}).get(sec["toname"].split("@")[1])
            if sp:
                snap["received"] = dict(sp)
                snap["hasrecvd"] = True
        d["snaps"].append(snap)
        m.relocate_dirs()
        apply_manifest(host, d["dir"], sec["manifest"], m.exclude_for(fsname), self.prewritten)
        m._live_cache.clear()
        m.mark_quiet(fsname)


# ----------------------------------------------------------------------------- version


def cmd_version(host, args) -> int:
    getopts(args, "j", colon_msgs=False)
    v = os.environ.get("ZFS_STANDIN_VERSION", STANDIN_VERSION_DEFAULT)
    print("zfs-%s-1" % v)
    print("zfs-kmod-%s-1" % v)
    return 0


# ----------------------------------------------------------------------------- zpool


def zpool_main(args) -> int:
    if not args:
        err("missing command")
        sys.stderr.write("usage: zpool command args ...\n")
        return 2
    cmd = args[0]
    host = get_host()
    rest = args[1:]
    if cmd == "create":
        opts, ops = getopts(rest, "fndBo:O:m:R:t:")
        mount = None
        for ch, val in opts:
            if ch == "m":
                mount = val
        no_features = any(ch == "d" for ch, _ in opts)  # -d: every feature disabled
        if not ops:
            err("missing pool name argument")
            return 2
        pool = ops[0]
        prob = name_problem(pool, False)
        if prob or "/" in pool:
            err("cannot create '%s': invalid pool name" % pool)
            return 1
        if pool in ("mirror", "raidz", "draid", "spare", "log", "cache") or (
            pool.startswith(("c", "mirror", "raidz")) and pool[1:2].isdigit()
        ):
            err("cannot create '%s': name is reserved" % pool)
            return 1
        with Session(host) as m:
            if pool in m.st["pools"]:
                raise fail("cannot create '%s': pool already exists" % pool)
            m.st["pools"][pool] = {"guid": m.guid_new(), "creation": int(time.time()),
                                   "size": 10 << 30}  # fmt: skip
            if no_features:
                m.st["pools"][pool]["features_disabled"] = True
            local = {}
            if mount:
                local["mountpoint"] = mount
            m.new_fs(pool, local)
        return 0
    if cmd == "destroy":
        _opts, ops = getopts(rest, "f", colon_msgs=False)
        if not ops:
            err("missing pool argument")
            return 2
        pool = ops[0]
        with Session(host) as m:
            if pool not in m.st["pools"]:
                raise fail("cannot open '%s': no such pool" % pool)
            for n in sorted([n for n in m.ds if pool_of(n) == pool], reverse=True):
                m.remove_fs(n)
            del m.st["pools"][pool]
        return 0
    if cmd == "list":
        opts, ops = getopts(rest, "gHLpPvo:T:")
        scripted = any(ch == "H" for ch, _ in opts)
        cols = ["name", "size", "alloc", "free", "health"]
        for ch, val in opts:
            if ch == "o":
                cols = val.split(",")
        with Session(host, write=False) as m:
            pools = sorted(m.st["pools"])
            rows = []
            for p in ops:
                if p not in m.st["pools"]:
                    raise fail("cannot open '%s': no such pool" % p)
            for p in ops or pools:
                info = m.st["pools"][p]
                used = m.used(p, None)
                vals = {"name": p, "size": nicenum(info["size"]), "alloc": nicenum(used),
                        "free": nicenum(info["size"] - used), "health": "ONLINE",
                        "guid": str(info["guid"]), "cap": "0%", "altroot": "-"}  # fmt: skip
                rows.append([vals.get(c, "-") for c in cols])
        if not rows:
            print("no pools available")
            return 0
        write_table(rows, cols, scripted, get_style=False,
                    headers=[c.upper() for c in cols])  # fmt: skip
        return 0
    if cmd == "status":
        with Session(host, write=False) as m:
            pools = rest or sorted(m.st["pools"])
            if not m.st["pools"]:
                print("no pools available")
                return 0
            for p in pools:
                if p not in m.st["pools"]:
                    raise fail("cannot open '%s': no such pool" % p)
                print("  pool: %s\n state: ONLINE\nconfig:\n\n\tNAME  STATE\n\t%s  ONLINE\n\n"
                      "errors: No known data errors" % (p, p))  # fmt: skip
        return 0
    if cmd == "version":
        return cmd_version(host, rest)
    if cmd == "sync":  # every stand-in change is on disk when the command returns
        with Session(host, write=False) as m:
            for p in rest:
                if p not in m.st["pools"]:
                    raise fail("cannot open '%s': no such pool" % p)
        return 0
    err("unrecognized command '%s'" % cmd)
    sys.stderr.write("usage: zpool command args ...\n")
    return 2


# ----------------------------------------------------------------------------- main

ZFS_COMMANDS = {
    "create": cmd_create,
    "destroy": cmd_destroy,
    "snapshot": cmd_snapshot,
    "rollback": cmd_rollback,
    "rename": cmd_rename,
    "list": cmd_list,
    "get": cmd_get,
    "set": cmd_set,
    "inherit": cmd_inherit,
    "hold": lambda h, a: cmd_hold_release(h, a, True),
    "release": lambda h, a: cmd_hold_release(h, a, False),
    "holds": cmd_holds,
    "mount": cmd_mount,
    "unmount": cmd_unmount,
    "diff": cmd_diff,
    "send": cmd_send,
    "receive": cmd_receive,
    "version": cmd_version,
}

ALIAS_CMDS = {"umount": "unmount", "recv": "receive", "snap": "snapshot"}


def zfs_main(args) -> int:
    if not args:
        err("missing command")
        raise zfs_usage(False)
    cmd = ALIAS_CMDS.get(args[0], args[0])
    if cmd in ("-?", "--help"):
        raise zfs_usage(True)
    if cmd in ("-V", "--version"):
        cmd = "version"
    if cmd == "help":
        if len(args) > 1 and args[1] in ZFS_USAGE:
            CURRENT_CMD[0] = args[1]
        raise zfs_usage(True)
    rest = args[1:]
    if cmd not in ZFS_COMMANDS and "=" in cmd:
        cmd = "set"
        rest = args
    if cmd not in ZFS_COMMANDS:
        if cmd in ZFS_USAGE:
            raise fail("zfs stand-in: 'zfs %s' is not modelled" % cmd)
        err("unrecognized command '%s'" % cmd)
        zfs_usage(False)
        raise Exit(2)
    CURRENT_CMD[0] = cmd
    host = get_host()
    return ZFS_COMMANDS[cmd](host, rest)


def log_call(prog: str, argv) -> None:
    root = os.environ.get("ZFS_STANDIN_ROOT")
    if not root:
        return
    try:
        os.makedirs(root, exist_ok=True)
        line = jdumps({"argv": [prog, *argv], "pid": os.getpid(), "t": time.time()})
        fd = os.open(os.path.join(root, "calls.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     0o644)  # fmt: skip
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    prog = os.path.basename(argv[0])
    args = argv[1:]
    if prog not in ("zfs", "zpool"):
        if args and args[0] in ("zfs", "zpool"):
            prog = args[0]
            args = args[1:]
        else:
            err("usage: standin.py zfs|zpool ARGS...")
            return 2
    log_call(prog, args)
    delay = os.environ.get("ZFS_STANDIN_DELAY")
    if delay:
        try:  # noqa: SIM105 - contextlib is not imported for a plain call (~2 ms)
            time.sleep(float(delay))
        except ValueError:
            pass
    try:
        rc = zfs_main(args) if prog == "zfs" else zpool_main(args)
    except Exit as e:
        rc = e.code
    try:  # noqa: SIM105 - as above
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, AttributeError):
        pass
    return rc


def cli(argv) -> None:
    """Entry point of the `zfs`/`zpool` wrappers: main(), then exit without the interpreter's
    teardown (freeing the loaded state and every module: ~2 ms, a sixth of a `zfs get`'s CPU).
    Output is flushed first; if that fails, the ordinary exit reports it as it always did.
    Nothing else is pending: files are closed as written, the only threads are daemons."""
    rc = main(argv)
    if not isinstance(rc, int):
        sys.exit(rc)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        sys.exit(rc)
    os._exit(rc)


if __name__ == "__main__":
    try:
        code = main()
    except BrokenPipeError:
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
