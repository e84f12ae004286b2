"""zfs create, destroy (filesystems and snapshots, with OpenZFS's refusal listings) and
rename."""

from ..errors import err, fail, usage_err
from ..lazy import Lazy
from ..model import PRIVILEGED, Session
from ..names import is_descendant, name_problem, parent_of, pool_of
from ..options import getopts
from ..release import zversion
from ..state import Host
from ..units import nicenum

crypt = Lazy("..crypt", globals())


def prop_perm(prop: str) -> str:
    """The delegated permission that setting `prop` needs."""
    from ..properties import canon_prop

    return canon_prop(prop) or "userprop"


def cmd_create(host: Host, args) -> int:
    opts, ops = getopts(args, "Pnpuvo:b:sV:")
    parents = False
    nomount = False
    props = {}
    for ch, val in opts:
        if ch == "p":
            parents = True
        elif ch == "u":
            nomount = True
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
        cprops = crypt.split_props(props) if any(k in props for k in CRYPT_OPTS) else {}
        checked = {}
        for k, v in props.items():
            ck, cv = m.validate_set(name, k, v, errbuf)
            checked[ck] = cv
        if missing and not PRIVILEGED:  # create_parents(): each made and mounted, as zfs create
            for p in reversed(missing):
                if not m.may(parent_of(p), "create", "mount"):
                    raise fail("cannot create '%s': permission denied" % p)
                m.new_fs(p)
                m.ds[p]["mounted"] = False
                m.ds[p]["was_mounted"] = False
                raise fail(m.mount_refused(p))
        for p in reversed(missing):
            m.new_fs(p)
        cr = None
        if cprops or "crypt" in m.ds[par]:
            cr = crypt.creation_crypt(m, name, cprops, errbuf)
        perms = ["create", "mount"] + [prop_perm(k) for k in list(props) + list(cprops)]
        if not m.may(par, *perms):
            raise fail("%s: permission denied" % errbuf)
        if cr is not None and not cr.get("root") and not crypt.key_loaded(m, par):
            raise fail("%s: encryption root's key is not loaded or provided" % errbuf)
        d = m.new_fs(name, checked)
        if cr is not None:
            d["crypt"] = cr
        # zfs create mounts the new filesystem only when it can (canmount=on, a mountpoint
        # that is a path) and was not told not to (-u)
        mp = m.get_prop(name, "mountpoint")[0]
        if nomount or m.get_prop(name, "canmount")[0] != "on" or mp in ("none", "legacy"):
            d["mounted"] = False
            d["was_mounted"] = False
        elif not PRIVILEGED:  # zfs_mount_delegation_check(): Linux mounts for root only
            d["mounted"] = False
            d["was_mounted"] = False
            raise fail("filesystem successfully created, but it may only be mounted by root")
    return 0


CRYPT_OPTS = ("encryption", "keyformat", "keylocation", "pbkdf2iters")


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
            if not all(m.may("%s@%s" % (f, s["name"]), "destroy", "mount") for f, s in victims):
                raise fail("cannot destroy snapshots: permission denied")
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
        if "#" in target:
            return destroy_bookmark(m, target, flags)
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
            if not PRIVILEGED:  # libzfs unmounts first (Linux: root only), then the kernel
                if m.ds[f]["mounted"] and not m.ds[f]["inconsistent"]:
                    raise fail(m.unmount_refused(f))
                if not m.may(f, "destroy", "mount"):
                    raise fail("cannot destroy '%s': permission denied" % f)
            m.ds[f]["snaps"] = []
            if "/" not in f:
                continue  # the pool's root dataset stays
            if m.children(f):
                rv = 1
                continue
            m.remove_fs(f)
    return rv


def destroy_bookmark(m, target: str, flags: set) -> int:
    """zfs destroy fs#bm: no -n, -d, -r (exit 255, as OpenZFS); the existence check is
    libzfs's own, before the kernel's permission check."""
    for flag, what in (("n", "dryrun"), ("d", "defer destroy"), ("r", "recursive"),
                       ("R", "recursive")):  # fmt: skip
        if flag in flags:
            err("%s is not supported with bookmark" % what)
            return 255
    d, bm = m.bookmark(target)
    if bm is None:
        err("bookmark '%s' does not exist." % target)
        return 1
    if not m.may(target.split("#")[0], "destroy"):
        raise fail("cannot destroy bookmark: permission denied")
    del d["bookmarks"][target.split("#", 1)[1]]
    if not d["bookmarks"]:
        del d["bookmarks"]
    return 0


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
            if not m.may(src, "rename", "mount") or not m.may(fs, "create", "mount"):
                raise fail("cannot rename '%s': permission denied" % src)
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
        if not PRIVILEGED:
            for n in [src, *m.children(src)]:
                if m.ds[n]["mounted"] and not m.ds[n]["inconsistent"] and "u" not in flags:
                    raise fail(m.unmount_refused(n))
            if not m.may(src, "rename", "mount") or (
                tpar in m.ds and not m.may(tpar, "create", "mount")
            ):
                raise fail("cannot rename '%s': permission denied" % src)
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
