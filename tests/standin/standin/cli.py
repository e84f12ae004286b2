"""Entry point of the `zfs` and `zpool` wrappers: log the call, dispatch, exit.

Every call is a new process: the command table names the module of each command, which is
imported only when that command runs, so a `zfs get` never loads send or receive."""

import os
import sys
import time

from .errors import CURRENT_CMD, Exit, err
from .lazy import jdumps
from .state import get_host

# command -> (module in standin.commands, function): a call imports its own module only
ZFS_COMMANDS = {
    "create": ("datasets", "cmd_create"),
    "destroy": ("datasets", "cmd_destroy"),
    "snapshot": ("snapshots", "cmd_snapshot"),
    "rollback": ("snapshots", "cmd_rollback"),
    "rename": ("datasets", "cmd_rename"),
    "list": ("listing", "cmd_list"),
    "get": ("get", "cmd_get"),
    "set": ("setprops", "cmd_set"),
    "inherit": ("setprops", "cmd_inherit"),
    "hold": ("holds", "cmd_hold"),
    "release": ("holds", "cmd_release"),
    "holds": ("holds", "cmd_holds"),
    "mount": ("mount", "cmd_mount"),
    "unmount": ("mount", "cmd_unmount"),
    "diff": ("diff", "cmd_diff"),
    "send": ("send", "cmd_send"),
    "receive": ("receive", "cmd_receive"),
    "version": ("version", "cmd_version"),
    "bookmark": ("bookmark", "cmd_bookmark"),
    "load-key": ("keys", "cmd_load_key"),
    "unload-key": ("keys", "cmd_unload_key"),
    "change-key": ("keys", "cmd_change_key"),
    "allow": ("allow", "cmd_allow"),
    "unallow": ("allow", "cmd_unallow"),
}
ALIAS_CMDS = {"umount": "unmount", "recv": "receive", "snap": "snapshot"}


def zfs_main(args) -> int:
    cmd = ALIAS_CMDS.get(args[0], args[0]) if args else ""
    if cmd in ("-V", "--version"):
        cmd = "version"
    rest = args[1:]
    if cmd not in ZFS_COMMANDS and "=" in cmd:
        cmd = "set"
        rest = args
    if cmd not in ZFS_COMMANDS:
        from .usage import no_command  # help, or no command the stand-in runs

        raise no_command(args)
    CURRENT_CMD[0] = cmd
    host = get_host()
    return command(*ZFS_COMMANDS[cmd])(host, rest)


def command(module: str, name: str):
    """The function `name` of standin.commands.<module>, imported now."""
    mod = __import__("%s.commands.%s" % (__package__, module), fromlist=[name])
    return getattr(mod, name)


def log_call(prog: str, argv) -> None:
    root = os.environ.get("ZFS_STANDIN_ROOT")
    if not root:
        return
    try:
        try:
            shared = os.stat(root).st_mode & 0o002
        except FileNotFoundError:
            os.makedirs(root, exist_ok=True)
            shared = 0
        if shared:
            # a state root several users share (world-writable, see the README): what any
            # of them creates in it stays usable by the others, as the kernel's pool is
            os.umask(0)
        line = jdumps({"argv": [prog, *argv], "pid": os.getpid(), "t": time.time()})
        fd = os.open(os.path.join(root, "calls.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     0o666)  # fmt: skip
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
            err("usage: python3 -m standin zfs|zpool ARGS...")
            return 2
    log_call(prog, args)
    delay = os.environ.get("ZFS_STANDIN_DELAY")
    if delay:
        try:  # noqa: SIM105 - contextlib is not imported for a plain call (~2 ms)
            time.sleep(float(delay))
        except ValueError:
            pass
    try:
        rc = zfs_main(args) if prog == "zfs" else command("zpool", "zpool_main")(args)
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
