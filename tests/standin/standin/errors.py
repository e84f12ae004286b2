"""How a command fails: `Exit` carries the exit code up to cli; `err`/`fail` print
OpenZFS's message on stderr first; `usage_err` adds the command's usage text (usage.py, loaded
only to print it) and exits 2."""

import sys


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


CURRENT_CMD = [None]  # the zfs command running: whose usage a usage error prints


def usage_err(msg: "str | None" = None) -> Exit:
    if msg:
        err(msg)
    from .usage import zfs_usage  # the usage text is only loaded to be printed

    return zfs_usage(False)
