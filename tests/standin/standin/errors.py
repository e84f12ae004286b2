"""How a command fails: `Exit` carries the exit code up to cli; `err`/`fail` print
OpenZFS's message on stderr first."""

from __future__ import annotations

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
