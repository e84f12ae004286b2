"""Delegated permissions (`zfs allow`), evaluated as the OpenZFS kernel does for a caller
that is not root (dsl_deleg_access_impl): only imported then.

A filesystem's grants are `d["deleg"]`, keyed like the kernel's delegation ZAP entries:
`<who><where>$<id>` -> sorted permission names, with who `u` user, `g` group, `e` everyone
(`U`/`G`/`E`: the permission sets granted to them), where `l` local or `d` descendent (a
"local+descendent" grant is both entries), id the numeric uid/gid (empty for everyone);
`s-$@name` / `S-$@name` define a permission set (its permissions / the sets it includes),
`c-$` / `C-$` the create-time permissions (stored and printed; not applied to new datasets).

The check for a permission on a dataset walks from it up to the pool: at the dataset itself
local grants count, above it descendent ones only; a snapshot has no local grants of its own
(a snapshot is checked as a descendent, even at its own filesystem). At each level the
caller's uid, primary gid, everyone and supplementary groups are tried, and the permission
sets granted to them (resolved at the nearest level that defines them)."""

import os

from .names import fs_of, parent_of
from .release import zversion

SUBCOMMANDS = [
    "allow", "bookmark", "clone", "create", "destroy", "diff", "mount", "promote", "receive",
    "receive:append", "rename", "rollback", "send", "share", "snapshot", "load-key",
    "change-key", "hold", "release",
]  # fmt: skip
# what `zfs allow` names in its help, in its order: (name, type, note)
PERM_HELP = [
    ("allow", "subcommand", "Must also have the permission that is being\n\t\t\t\tallowed"),
    ("clone", "subcommand", "Must also have the 'create' ability and 'mount'\n\t\t\t\t"
     "ability in the origin file system"),
    ("create", "subcommand", "Must also have the 'mount' ability"),
    ("destroy", "subcommand", "Must also have the 'mount' ability"),
    ("diff", "subcommand", "Allows lookup of paths within a dataset;\n\t\t\t\tgiven an "
     "object number. Ordinary users need this\n\t\t\t\tin order to use zfs diff"),
    ("hold", "subcommand", "Allows adding a user hold to a snapshot"),
    ("mount", "subcommand", "Allows mount/umount of ZFS datasets"),
    ("promote", "subcommand", "Must also have the 'mount'\n\t\t\t\tand 'promote' ability "
     "in the origin file system"),
    ("receive", "subcommand", "Must also have the 'mount' and 'create' ability"),
    ("release", "subcommand", "Allows releasing a user hold which\n\t\t\t\tmight destroy "
     "the snapshot"),
    ("rename", "subcommand", "Must also have the 'mount' and 'create'\n\t\t\t\tability in "
     "the new parent"),
    ("rollback", "subcommand", ""),
    ("send", "subcommand", ""),
    ("share", "subcommand", "Allows sharing file systems over NFS or SMB\n\t\t\t\tprotocols"),
    ("snapshot", "subcommand", ""),
    ("bookmark", "subcommand", ""),
    ("load-key", "subcommand", "Allows loading or unloading an encryption key"),
    ("change-key", "subcommand", "Allows changing or adding an encryption key"),
    ("groupquota", "other", "Allows accessing any groupquota@... property"),
    ("groupused", "other", "Allows reading any groupused@... property"),
    ("userprop", "other", "Allows changing any user property"),
    ("userquota", "other", "Allows accessing any userquota@... property"),
    ("userused", "other", "Allows reading any userused@... property"),
    ("userobjquota", "other", "Allows accessing any userobjquota@... property"),
    ("userobjused", "other", "Allows reading any userobjused@... property"),
    ("groupobjquota", "other", "Allows accessing any \n\t\t\t\tgroupobjquota@... property"),
    ("groupobjused", "other", "Allows reading any groupobjused@... property"),
    ("projectused", "other", "Allows reading any projectused@... property"),
    ("projectquota", "other", "Allows accessing any projectquota@... property"),
    ("projectobjused", "other", "Allows accessing any \n\t\t\t\tprojectobjused@... property"),
    ("projectobjquota", "other", "Allows accessing any \n\t\t\t\tprojectobjquota@... "
     "property"),
]  # fmt: skip
# the settable properties a permission may name (OpenZFS 2.1; 2.3 adds four)
PROPERTIES = [
    "aclinherit", "aclmode", "acltype", "atime", "canmount", "casesensitivity", "checksum",
    "compression", "context", "copies", "dedup", "defcontext", "devices", "dnodesize",
    "encryption", "exec", "filesystem_limit", "fscontext", "keyformat", "keylocation", "logbias",
    "mlslabel", "mountpoint", "nbmand", "normalization", "overlay", "pbkdf2iters",
    "primarycache", "quota", "readonly", "recordsize", "redundant_metadata", "refquota",
    "refreservation", "relatime", "reservation", "rootcontext", "secondarycache", "setuid",
    "sharenfs", "sharesmb", "snapdev", "snapdir", "snapshot_limit", "special_small_blocks",
    "sync", "utf8only", "version", "volblocksize", "volmode", "volsize", "vscan", "xattr",
    "zoned",
]  # fmt: skip
PROPERTIES_23 = ["direct", "longname", "prefetch", "volthreading"]


def properties() -> list:
    return sorted(PROPERTIES + (PROPERTIES_23 if zversion() >= (2, 3, 0) else []))


OTHERS = [
    "groupquota", "groupused", "userprop", "userquota", "userused", "userobjquota",
    "userobjused", "groupobjquota", "groupobjused", "projectused", "projectquota",
    "projectobjused", "projectobjquota",
]  # fmt: skip


def valid_perm(perm: str) -> bool:
    """A permission `zfs allow` accepts: a subcommand, `userprop` and the like, or a settable
    native property."""
    if perm == "receive:append":
        return zversion() >= (2, 3, 2)
    return perm in SUBCOMMANDS or perm in OTHERS or perm in properties()


def caller_keys(letter_user: str, letter_group: str, letter_every: str, where: str) -> list:
    """The ZAP keys that name the caller at one level (uid, primary gid, everyone, groups)."""
    keys = ["%s%s$%d" % (letter_user, where, os.geteuid()),
            "%s%s$%d" % (letter_group, where, os.getegid()),
            "%s%s$" % (letter_every, where)]  # fmt: skip
    keys += ["%s%s$%d" % (letter_group, where, g) for g in os.getgroups()]
    return keys


def allowed(m, name: str, perm: str) -> bool:
    """Whether the (non-root) caller holds `perm` on dataset or snapshot `name`."""
    where = "d" if "@" in name else "l"
    cur = fs_of(name)
    sets = {}  # set name -> resolved (found at a level that defines it)
    while cur is not None and cur in m.ds:
        acl = m.ds[cur].get("deleg")
        if acl:
            for key in caller_keys("U", "G", "E", where):
                for s in acl.get(key, ()):
                    sets.setdefault(s, False)
            expanded = True
            while expanded:
                expanded = False
                for s, done in list(sets.items()):
                    if done:
                        continue
                    defined = acl.get("s-$" + s)
                    if defined is not None:
                        if perm in defined:
                            return True
                        sets[s] = True
                    for inner in acl.get("S-$" + s, ()):
                        if inner not in sets:
                            sets[inner] = False
                            expanded = True
            for key in caller_keys("u", "g", "e", where):
                if perm in acl.get(key, ()):
                    return True
        cur = parent_of(cur)
        where = "d"
    return False
