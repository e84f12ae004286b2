"""Properties: the native property table (types, defaults, columns, allowed values), user
property names, and how a dataset's value is found (local, received, `$inherit` masks,
inherited, default), shown (`-p` or human), computed (space, guid...) and validated on set.
`Properties` holds the Model methods for all of this."""

import os

from .errors import fail
from .lazy import Lazy
from .names import parent_of, pool_of

trees = Lazy(".trees", globals())
units = Lazy(".units", globals())


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
BM = frozenset(["bookmark"])  # the few a bookmark has: type, creation, guid, createtxg, referenced
ONOFF = ("on", "off")
NATIVE = {
    "type": Prop("ro", ALL | BM, None, "TYPE", False, "filesystem | volume | snapshot | bookmark"),
    "creation": Prop("ro", ALL | BM, None, "CREATION", False, "<date>"),
    "used": Prop("ro", ALL, None, "USED", True, "<size>"),
    "available": Prop("ro", FS, None, "AVAIL", True, "<size>"),
    "referenced": Prop("ro", ALL | BM, None, "REFER", True, "<size>"),
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
    "guid": Prop("ro", ALL | BM, None, "GUID", True, "<uint64>"),
    "createtxg": Prop("ro", ALL | BM, None, "CREATETXG", True, "<uint64>"),
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
    "logicalreferenced": Prop("ro", ALL | BM, None, "LREFER", True, "<size>"),
    "encryption": Prop("onetime", ALL, "off", "ENCRYPTION", False,
                       "on | off | aes-128-ccm | aes-192-ccm | aes-256-ccm | aes-128-gcm | "
                       "aes-192-gcm | aes-256-gcm"),
    # the encryption family is computed by crypt.py (imported when one of them is read)
    "keylocation": Prop("default", ALL, "none", "KEYLOCATION", False,
                        "prompt | <file URI> | <https URL> | <http URL>"),
    "keyformat": Prop("onetime", ALL, "none", "KEYFORMAT", False, "none | raw | hex | passphrase"),
    "pbkdf2iters": Prop("onetime", ALL, "0", "PBKDF2ITERS", True, "<iters>"),
    "encryptionroot": Prop("ro", ALL, None, "ENCROOT", False, "<filesystem | volume>"),
    "keystatus": Prop("ro", ALL, None, "KEYSTATUS", False, "none | unavailable | available"),
    "receive_resume_token": Prop("ro", FS, None, "RESUMETOK", False, "<string token>"),
    "name": Prop("ro", ALL | BM, None, "NAME", False, "", hidden=True),
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
CRYPT_PROPS = frozenset(["encryption", "keylocation", "keyformat", "pbkdf2iters",
                         "encryptionroot", "keystatus"])  # fmt: skip
crypt = Lazy(".crypt", globals())


def kind_of(name: str) -> str:
    return "snapshot" if "@" in name else "bookmark" if "#" in name else "filesystem"


def canon_prop(name: str) -> "str | None":
    """Native property name (after aliases) or None."""
    name = ALIASES.get(name, name)
    return name if name in NATIVE else None


def is_user_prop(name: str) -> bool:
    if ":" not in name or len(name) >= 256:
        return False
    return all(c in USER_CHARS for c in name)


class Properties:
    """Model's property methods (see model.Model)."""

    # Space per filesystem, remembered while the state cannot change (a read-only session:
    # `Model.freeze`). `used` of a parent adds its children's, and `available` needs the
    # pool's, so a `zfs get all` over n filesystems would otherwise walk the tree O(n^2)
    # times: minutes for 1,000 filesystems, where OpenZFS reads its space accounting.
    _used_memo: "dict | None" = None

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
        if "#" in name:  # a bookmark has no user or inheritable properties
            return "-", "none", None
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
        kind = kind_of(name)
        native = canon_prop(prop)
        if native is None:
            v, k, src = self.get_prop(name, prop)
            recvd = self._recvd(name, prop) if kind != "bookmark" else None
            return v, k, src, recvd
        p = NATIVE[native]
        if kind not in p.types:
            return None, "none", None, None
        if native in CRYPT_PROPS:
            return crypt.prop_value(self, name, native, parsable)
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
            return str(n) if parsable else units.nicenum(n)
        if prop == "recordsize":
            return str(int(v)) if parsable else units.nicenum(int(v))
        if prop == "written":  # libzfs's plain zfs_nicenum: "0", "512", "1.50M" (no "B")
            return str(int(v)) if parsable else units.nicenum(int(v), bytes_=False)
        if prop in ("used", "available", "referenced", "usedbysnapshots",
                    "usedbydataset", "usedbychildren", "usedbyrefreservation",
                    "logicalused", "logicalreferenced"):  # fmt: skip
            return str(int(v)) if parsable else units.nicenum(int(v))
        if prop == "creation":
            return str(int(v)) if parsable else units.fmt_time(int(v))
        if prop in ("compressratio", "refcompressratio"):
            return "1.00" if parsable else "1.00x"
        return str(v)

    def receiving_tokens(self) -> dict:
        """The tokens of receives in progress (`receiving`), read once per model."""
        memo = getattr(self, "_receiving_tokens", None)
        if memo is None:
            from . import receiving

            memo = self._receiving_tokens = receiving.tokens(self.host)
        return memo

    def ro_value(self, name: str, prop: str):
        if "#" in name:
            bm = self.obj(name)
            if prop == "name":
                return name
            if prop == "type":
                return "bookmark"
            if prop in ("referenced", "logicalreferenced"):
                return bm["referenced"]
            return bm[prop]  # creation, guid, createtxg
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
            if d.get("partial"):
                return d["partial"]["token"]
            return self.receiving_tokens().get(fsname)  # a `recv -s` in progress shows one
        if prop in ("referenced", "logicalreferenced"):
            if s:
                return trees.manifest_size(self.snap_manifest(s))
            return trees.manifest_size(self.live(fsname))
        if prop == "written":
            return self.written(fsname, s)
        if prop in ("used", "logicalused"):
            return self.used(fsname, s)
        if prop == "usedbysnapshots":
            return (
                self.used(fsname, None)
                - trees.manifest_size(self.live(fsname))
                - sum(self.used(c, None) for c in self.children(fsname, recursive=False))
            )
        if prop == "usedbydataset":
            return trees.manifest_size(self.live(fsname))
        if prop == "usedbychildren":
            return sum(self.used(c, None) for c in self.children(fsname, recursive=False))
        if prop == "usedbyrefreservation":
            return 0
        if prop == "available":
            pool = pool_of(fsname)
            total = self.st["pools"].get(pool, {}).get("size", 10 << 30)
            return max(total - self.used(pool, None), 0)
        return None

    def written(self, fsname: str, s: "dict | None") -> int:
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

    def used(self, fsname: str, s: "dict | None") -> int:
        memo = self._used_memo
        if s is not None or memo is None:
            return self._used(fsname, s)
        if fsname not in memo:
            memo[fsname] = self._used(fsname, None)
        return memo[fsname]

    def _used(self, fsname: str, s: "dict | None") -> int:
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
        total = trees.manifest_size(live)
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
        kind = kind_of(name)
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
        if native == "keylocation":
            return native, crypt.check_keylocation_set(self, name, value, errbuf)
        if native == "mountpoint":
            if value in ("none", "legacy") or value.startswith("/"):
                return native, os.path.normpath(value) if value.startswith("/") else value
            raise fail("%s: '%s' must be an absolute path, 'none', or 'legacy'"
                       % (errbuf, native))  # fmt: skip
        if native in ("quota", "reservation", "refquota", "refreservation"):
            if value == "none":
                return native, "0"
            n = units.parse_size(value)
            if n is None:
                raise fail("%s: bad numeric value '%s'" % (errbuf, value))
            return native, str(n)
        if native == "recordsize":
            n = units.parse_size(value)
            if n is None:
                raise fail("%s: bad numeric value '%s'" % (errbuf, value))
            if n < 512 or n > (16 << 20) or n & (n - 1):
                raise fail("%s: 'recordsize' must be power of 2 from 512B to 16M"
                           % errbuf)  # fmt: skip
            return native, str(n)
        return native, value

    def set_local(self, name: str, prop: str, value: str) -> None:
        obj = self.obj(name)
        if prop == "keylocation":  # kept with the key (never a stream property)
            obj["crypt"]["keylocation"] = value
            return
        obj.setdefault("local", {})[prop] = value
        if prop in obj.get("mask", []):
            obj["mask"].remove(prop)

    def inherit(self, name: str, prop: str, revert_received: bool) -> None:
        obj = self.obj(name)
        obj.setdefault("local", {}).pop(prop, None)
        mask = obj.setdefault("mask", [])
        if revert_received:
            if prop in mask:
                mask.remove(prop)
        elif obj.get("hasrecvd") and prop not in mask:
            mask.append(prop)
