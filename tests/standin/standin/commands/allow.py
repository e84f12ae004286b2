"""zfs allow and unallow: grant, revoke and print delegated permissions (how they are stored
and checked: deleg.py). Parsing, messages and the printed layout follow zfs_main.c."""

import grp
import pwd
import sys

from ..deleg import PERM_HELP, allowed, properties, valid_perm
from ..errors import Exit, err, fail, usage_err
from ..model import PRIVILEGED, Model, Session
from ..names import parent_of
from ..options import getopts
from ..state import Host

ALLOW_USAGE = (
    "\tallow <filesystem|volume>\n"
    '\tallow [-ldug] <"everyone"|user|group>[,...] <perm|@setname>[,...]\n'
    "\t    <filesystem|volume>\n"
    "\tallow [-ld] -e <perm|@setname>[,...] <filesystem|volume>\n"
    "\tallow -c <perm|@setname>[,...] <filesystem|volume>\n"
    "\tallow -s @setname <perm|@setname>[,...] <filesystem|volume>\n"
)
UNALLOW_USAGE = (
    '\tunallow [-rldug] <"everyone"|user|group>[,...]\n'
    "\t    [<perm|@setname>[,...]] <filesystem|volume>\n"
    "\tunallow [-rld] -e [<perm|@setname>[,...]] <filesystem|volume>\n"
    "\tunallow [-r] -c [<perm|@setname>[,...]] <filesystem|volume>\n"
    "\tunallow [-r] -s @setname [<perm|@setname>[,...]] <filesystem|volume>\n"
)
OPTIONS = [("-h", "show this help message and exit"), ("-l", "set permission locally"),
           ("-d", "set permission for descents"), ("-u", "set permission for user"),
           ("-g", "set permission for group"), ("-e", "set permission for everyone"),
           ("-c", "set create time permission"), ("-s", "define permission set"),
           ("-r", "remove permissions recursively")]  # fmt: skip
WEIGHT = {"s": 0, "S": 0, "c": 1, "C": 1, "u": 2, "U": 2, "g": 3, "G": 3, "e": 4, "E": 4}


def allow_usage(un: bool, requested: bool, msg: "str | None" = None) -> Exit:
    """allow_usage(): the usage, options, permissions and properties, then `msg`; exit 0 when
    `requested` (-h, and an unknown user or group, which OpenZFS reports this way), else 2."""
    fmt = "%-16s %-14s\t%s\n"
    out = ["Usage: %s\n" % (UNALLOW_USAGE if un else ALLOW_USAGE), "Options:\n"]
    for opt, desc in OPTIONS[: len(OPTIONS) if un else len(OPTIONS) - 1]:
        out.append("  %-10s  %s\n" % (opt, desc))
    out.append("\nThe following permissions are supported:\n\n")
    out.append(fmt % ("NAME", "TYPE", "NOTES"))
    out += [fmt % row for row in PERM_HELP]
    out += [fmt % (p, "property", "") for p in properties()]
    if msg is not None:
        out.append("\nzfs: error: %s" % msg)
    stream = sys.stdout if requested else sys.stderr
    stream.write("".join(out))
    stream.flush()
    return Exit(0 if requested else 2)


class Opts:
    def __init__(self, flags: set):
        self.local = "l" in flags
        self.descend = "d" in flags
        self.user = "u" in flags
        self.group = "g" in flags
        self.everyone = "e" in flags
        self.create = "c" in flags
        self.set = "s" in flags
        self.recursive = "r" in flags
        self.usage = "h" in flags
        self.print_perms = False
        self.who = None
        self.perms = None
        self.dataset = None


def munge(ops: list, un: bool, expected: int, o: Opts) -> str:
    if un and len(ops) == expected - 1:
        o.perms = None
    elif len(ops) == expected:
        o.perms = ops[-2]
    else:
        raise allow_usage(un, False, "wrong number of parameters\n")
    return ops[-1]


def parse_args(ops: list, un: bool, o: Opts) -> None:
    """parse_allow_args()."""
    uge = o.user + o.group + o.everyone
    csuge = o.create + o.set + uge
    ldcsuge = csuge + o.local + o.descend
    if uge > 1:
        raise allow_usage(un, False, "-u, -g, and -e are mutually exclusive\n")
    if o.usage:
        if not ops and (ldcsuge + (o.recursive if un else 0)) == 0:
            raise allow_usage(un, True)
        raise usage_err()
    if o.set:
        if csuge > 1:
            raise allow_usage(un, False, "invalid options combined with -s\n")
        o.dataset = munge(ops, un, 3, o)
        if not ops[0].startswith("@"):
            raise allow_usage(un, False, "invalid set name: missing '@' prefix\n")
        o.who = ops[0]
    elif o.create:
        if ldcsuge > 1:
            raise allow_usage(un, False, "invalid options combined with -c\n")
        o.dataset = munge(ops, un, 2, o)
    elif o.everyone:
        if csuge > 1:
            raise allow_usage(un, False, "invalid options combined with -e\n")
        o.dataset = munge(ops, un, 2, o)
    elif uge == 0 and ops and ops[0] == "everyone":
        o.everyone = True
        o.dataset = munge(ops[1:], un, 2, o)
    elif len(ops) == 1 and not un:
        o.print_perms = True
        o.dataset = ops[0]
    else:
        o.dataset = munge(ops, un, 3, o)
        o.who = ops[0]
    if not o.local and not o.descend:
        o.local = o.descend = True


def resolve(who: str, o: Opts, un: bool) -> tuple:
    """(letter, id string) of one user or group name or number, as construct_fsacl_list()."""
    numeric = who.isdigit()
    if o.user or not o.group:
        try:
            uid = pwd.getpwuid(int(who)).pw_uid if numeric else pwd.getpwnam(who).pw_uid
            return "u", str(uid)
        except (KeyError, OverflowError):
            if o.user:
                if numeric:
                    return "u", who
                raise allow_usage(un, True, "invalid user %s\n" % who) from None
    try:
        gid = grp.getgrgid(int(who)).gr_gid if numeric else grp.getgrnam(who).gr_gid
        return "g", str(gid)
    except (KeyError, OverflowError):
        if o.group:
            if numeric:
                return "g", who
            raise allow_usage(un, True, "invalid group %s\n" % who) from None
        raise allow_usage(un, True, "invalid user/group %s\n" % who) from None


def entries(o: Opts, un: bool) -> dict:
    """{ZAP key: [perms] | None (unallow: the whole entry)}, as store_allow_perm()."""
    perms = o.perms.split(",") if o.perms is not None else None
    base = [p for p in perms if not p.startswith("@")] if perms is not None else None
    sets = [p for p in perms if p.startswith("@")] if perms is not None else None
    if o.set:
        targets = [("s", "S", ["-"], o.who)]
    elif o.create:
        targets = [("c", "C", ["-"], "")]
    else:
        where = (["l"] if o.local else []) + (["d"] if o.descend else [])
        if o.everyone:
            targets = [("e", "E", where, "")]
        else:
            targets = []
            for who in o.who.split(","):
                letter, ident = resolve(who, o, un)
                targets.append((letter, letter.upper(), where, ident))
    out = {}
    for base_l, set_l, wheres, ident in targets:
        for w in wheres:
            if perms is None:
                out["%s%s$%s" % (base_l, w, ident)] = None
                out["%s%s$%s" % (set_l, w, ident)] = None
                continue
            if base:
                out["%s%s$%s" % (base_l, w, ident)] = base
            if sets:
                out["%s%s$%s" % (set_l, w, ident)] = sets
    return out


def may_change(m: Model, name: str, changes: dict, un: bool) -> bool:
    """dsl_deleg_can_allow / can_unallow for a caller that is not root."""
    if PRIVILEGED:
        return True
    if not allowed(m, name, "allow"):
        return False
    if un:  # only their own user entries
        import os

        return all(k[0] in "uU" and k[3:] == str(os.geteuid()) for k in changes)
    for perms in changes.values():
        for p in perms or ():
            if p == "allow" or not allowed(m, name, p):
                return False
    return True


def apply(acl: dict, changes: dict, un: bool) -> None:
    for key, perms in changes.items():
        if not un:
            acl[key] = sorted(set(acl.get(key, ())) | set(perms))
            continue
        if perms is None:
            acl.pop(key, None)
            continue
        left = [p for p in acl.get(key, ()) if p not in perms]
        if left:
            acl[key] = left
        else:
            acl.pop(key, None)


def cmd_allow_unallow(host: Host, args, un: bool) -> int:
    opts, ops = getopts(args, "ldugecsrh" if un else "ldugecsh")
    o = Opts({ch for ch, _ in opts})
    parse_args(ops, un, o)
    with Session(host, write=not o.print_perms) as m:
        try:
            m.open(o.dataset, ("filesystem", "volume"))
        except Exit:
            err("Failed to open dataset: %s" % o.dataset)
            return 255
        if o.print_perms:
            print_perms(m, o.dataset)
            return 0
        changes = entries(o, un)
        errbuf = "cannot set permissions on '%s'" % o.dataset
        if any(not valid_perm(p) for perms in changes.values() for p in perms or ()
               if not p.startswith("@")):  # fmt: skip
            raise fail("%s: operation not applicable to datasets of this type" % errbuf)
        if not may_change(m, o.dataset, changes, un):
            raise fail("%s: permission denied" % errbuf)
        targets = [o.dataset] + (m.children(o.dataset) if un and o.recursive else [])
        for name in targets:
            d = m.ds[name]
            acl = d.setdefault("deleg", {})
            apply(acl, changes, un)
            if not acl:
                del d["deleg"]
    return 0


def cmd_allow(host: Host, args) -> int:
    return cmd_allow_unallow(host, args, False)


def cmd_unallow(host: Host, args) -> int:
    return cmd_allow_unallow(host, args, True)


def who_name(letter: str, ident: str) -> str:
    try:
        if letter in "uU":
            return pwd.getpwuid(int(ident)).pw_name
        return grp.getgrgid(int(ident)).gr_name
    except (KeyError, ValueError, OverflowError):
        return "(unknown: %s)" % ident


def print_perms(m: Model, name: str) -> None:
    """print_fs_perms(): the dataset's grants, then each ancestor's that has any."""
    out = []
    cur = name
    while cur is not None:
        acl = m.ds[cur].get("deleg")
        if acl:
            head = "---- Permissions on %s " % cur
            out.append(head + "-" * max(70 - len(head), 0))
            out += format_acl(acl)
        cur = parent_of(cur)
    if out:
        sys.stdout.write("\n".join(out) + "\n")


def format_acl(acl: dict) -> list:
    # one node per (weight, name): a user's permissions and the sets granted to them merge
    nodes: dict = {}
    for key, perms in acl.items():
        letter, where, ident = key[0], key[1], key[3:]
        node = nodes.setdefault((WEIGHT[letter], ident), {"letter": letter.lower(), "p": {}})
        for p in perms:
            node["p"].setdefault(p, set()).add(where)
    out = []
    titles = {0: "Permission sets:", 1: "Create time permissions:"}
    prev = None
    for (weight, ident), node in sorted(nodes.items()):
        if weight > 1:
            continue
        if weight != prev:
            out.append(titles[weight])
            prev = weight
        out.append("\t%s%s" % (ident + " " if ident else "", ",".join(sorted(node["p"]))))
    sections = [({"l"}, "Local permissions:"), ({"d"}, "Descendent permissions:"),
                ({"l", "d"}, "Local+Descendent permissions:")]  # fmt: skip
    for want, title in sections:
        first = True
        for (weight, ident), node in sorted(nodes.items()):
            if weight < 2:
                continue
            perms = [p for p, wh in sorted(node["p"].items()) if wh == want]
            if not perms:
                continue
            if first:
                out.append(title)
                first = False
            letter = node["letter"]
            who = {"u": "user", "g": "group", "e": "everyone"}[letter]
            if letter != "e":
                who += " " + who_name(letter, ident)
            out.append("\t%s %s" % (who, ",".join(perms)))
    return out
