"""zfs's usage text (per command and in full, with the property table for set/get/
inherit/list), printed for usage errors (exit 2), `zfs help` (exit 0) and a call that names
no command the stand-in runs. Imported only then."""

import sys

from .errors import CURRENT_CMD, Exit, err, fail
from .properties import NATIVE
from .release import zversion

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
        if zversion() >= (2, 2, 0):  # 2.1 ends with the permission line (found on 2.1.11)
            out.append("\nFor further help on a command or topic, run: zfs help [<topic>]\n")
    stream = sys.stdout if requested else sys.stderr
    stream.write("".join(out))
    stream.flush()
    return Exit(0 if requested else 2)


def no_command(args) -> Exit:
    """`zfs`, `zfs help [cmd]`, `zfs -?`, or a command that is not modelled or not zfs's."""
    if not args:
        err("missing command")
        return zfs_usage(False)
    cmd = args[0]
    if cmd in ("-?", "--help"):
        return zfs_usage(True)
    if cmd == "help":
        if len(args) > 1 and args[1] in ZFS_USAGE:
            CURRENT_CMD[0] = args[1]
        return zfs_usage(True)
    if cmd in ZFS_USAGE:
        return fail("zfs stand-in: 'zfs %s' is not modelled" % cmd)
    err("unrecognized command '%s'" % cmd)
    zfs_usage(False)
    return Exit(2)
