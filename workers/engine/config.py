"""Engine settings, read from zrep's own environment variable names.

An admin's existing `/etc/default/zrep`-style environment keeps working: every name zrep
honours has the same meaning here.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError, ValidationError
from .names import validate_property_assignment, validate_tag

DEFAULT_TAG = "zrep"
DEFAULT_SAVE_COUNT = 5
DEFAULT_DATEFORMAT = "%Y/%m/%d-%H:%M:%S"
# Seconds a control command (`zfs get/set/snapshot/destroy/...`, the peer's `takeover -L`) may
# run before it is stopped and the operation fails, retryably: long enough for a `destroy` or
# a `snapshot -r` on a loaded pool, short enough that a hung host frees the worker.
DEFAULT_COMMAND_TIMEOUT = 600.0
_SEND_FLAGS_ALLOWED = {
    "-c",
    "--compressed",
    "-w",
    "--raw",
    "-L",
    "--large-block",
    "-e",
    "--embed",
    "-h",
    "--holds",
    "-p",
    "--props",
    "-b",
    "--backup",
}


def default_rundir() -> str:
    """zrep's ZREP_RUNDIR default: /var/run for root, /tmp for anyone else."""
    return "/var/run" if os.geteuid() == 0 else "/tmp"


RESUME_OFF = ("0", "no", "off", "false")
LOCK_MARKS = ("auto", "always", "never")  # ZREPQ_LOCK_MARKS (`zreplock.marks_wanted`)


def resume_setting(value: str | None) -> bool:
    """`ZREP_RESUME`: resumable receives (`recv -s`, a cut stream resumed with `send -t`).

    On unless switched off. zrep resumes only when ZREP_RESUME is set to anything; zrepq, like
    zrepl, syncoid and zfs_autobackup, resumes by default, so unset or empty means on, any
    other value means on as it does for zrep, and `0`, `no`, `off` or `false` mean off (for
    pools without feature@extensible_dataset, which zrepq otherwise finds out by itself).
    """
    v = (value or "").strip().lower()
    return v not in RESUME_OFF


@dataclass(frozen=True)
class EngineConfig:
    tag: str = DEFAULT_TAG
    save_count: int = DEFAULT_SAVE_COUNT
    recursive: bool = False  # ZREP_R=-R: send -R, snapshot -r
    send_flags: tuple[str, ...] = ()  # ZREP_SEND_FLAGS
    inc_flag: str = "-I"  # ZREP_INC_FLAG (-i with a non-default tag)
    resume: bool = True  # ZREP_RESUME: recv -s, resume tokens (see `resume_setting`)
    outfilter: str | None = None  # ZREP_OUTFILTER, runs after send on the sending host
    infilter: str | None = None  # ZREP_INFILTER, runs before recv on the receiving host
    skip_expire: bool = False  # ZREP_SKIP_EXPIRE
    rename_unsent: bool = True  # ZREP_RENAME_UNSENT (zrep's default is yes)
    create_flags: tuple[str, ...] = ()  # ZREP_CREATE_FLAGS for `zfs create` of the destination
    init_remote_properties: tuple[tuple[str, str], ...] = ()  # ZREP_INIT_REMOTE_PROPERTIES
    src_host: str | None = None  # ZREP_SRC_HOST
    dateformat: str = DEFAULT_DATEFORMAT  # ZREP_DATEFORMAT
    rundir: str = ""  # ZREP_RUNDIR: where zrep's global lock `zrep.lock` lives
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT  # ZREPQ_COMMAND_TIMEOUT (zrepq's own)
    # The replication cursor (`bookmarks.py`): a bookmark of the last sent snapshot, the
    # incremental's base when that snapshot is gone. ZREPQ_BOOKMARKS=off: none.
    bookmarks: bool = True
    # Send an encrypted dataset decrypted (its plaintext; the standby holds it unencrypted):
    # ZREPQ_DECRYPT=yes. By default it goes raw (`send -w`): see `crypto.py`.
    decrypt: bool = False
    # Receive with `-u` (not mounted): Linux lets only root mount, so a worker running as a
    # dedicated user does (`delegation.py`). ZREPQ_RECV_UNMOUNTED; default: when not root.
    recv_unmounted: bool = field(default_factory=lambda: os.geteuid() != 0)
    # zrep's own lock marks (`TAG:lock-pid`/`lock-time`, `zreplock`): set and cleared around
    # a command when an upstream `zrep` is installed on this host ("auto"), always, or never.
    # A live mark is refused whatever this says. ZREPQ_LOCK_MARKS (zrepq's own).
    lock_marks: str = "auto"
    hold_tag: str = field(default="")  # derived: the `zfs hold` tag on the last sent snapshot

    def __post_init__(self) -> None:
        validate_tag(self.tag)
        if self.save_count < 1:
            raise ConfigError(f"ZREP_SAVE_COUNT must be at least 1, not {self.save_count}")
        if self.inc_flag not in ("-I", "-i"):
            raise ConfigError(f"ZREP_INC_FLAG must be -I or -i, not {self.inc_flag!r}")
        for flag in self.send_flags:
            if flag not in _SEND_FLAGS_ALLOWED:
                raise ConfigError(
                    f"ZREP_SEND_FLAGS: {flag!r} is not a zfs send flag zrepq passes through "
                    f"(allowed: {' '.join(sorted(_SEND_FLAGS_ALLOWED))})"
                )
        if not 0 < self.command_timeout < math.inf:
            raise ConfigError(
                f"ZREPQ_COMMAND_TIMEOUT must be a number of seconds above 0, "
                f"not {self.command_timeout!r}"
            )
        if self.lock_marks not in LOCK_MARKS:
            raise ConfigError(
                f"ZREPQ_LOCK_MARKS must be one of {', '.join(LOCK_MARKS)}, not {self.lock_marks!r}"
            )
        if not self.hold_tag:
            object.__setattr__(self, "hold_tag", f"zrepq:{self.tag}:lastsent")
        if not self.rundir:
            object.__setattr__(self, "rundir", default_rundir())
        elif not self.rundir.startswith("/"):
            raise ConfigError(f"ZREP_RUNDIR must be an absolute path, not {self.rundir!r}")

    def with_tag(self, tag: str) -> EngineConfig:
        """Same settings under another tag (zrep's -t). A non-default tag sends with -i."""
        inc = self.inc_flag if tag == DEFAULT_TAG else "-i"
        return replace(self, tag=tag, inc_flag=inc, hold_tag="")

    def prop(self, name: str) -> str:
        """`zrep:src-fs` and friends, under this config's tag."""
        return f"{self.tag}:{name}"

    def pair_props(self, src: tuple[str, str], dest: tuple[str, str]) -> dict[str, str]:
        """The properties that say which way a pair runs: from `src` to `dest`, each a (host,
        fs). Set on both sides of a pair (the standby receives them), swapped by failover."""
        (src_host, src_fs), (dest_host, dest_fs) = src, dest
        return {
            self.prop("src-fs"): src_fs,
            self.prop("src-host"): src_host,
            self.prop("dest-fs"): dest_fs,
            self.prop("dest-host"): dest_host,
        }

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> EngineConfig:
        """From typed field values (as `zrep_value` gives them); a missing field keeps its
        default, and an `inc_flag` of None is zrep's: -I under the default tag, else -i."""
        values = dict(values)
        if values.get("inc_flag") is None:
            tag = values.get("tag", DEFAULT_TAG)
            values["inc_flag"] = "-I" if tag == DEFAULT_TAG else "-i"
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EngineConfig:
        """From zrep's environment variables alone (`workers.settings` adds the file)."""
        env = os.environ if env is None else env
        return cls.from_values(
            {
                field: zrep_value(field, env[var])
                for field, var in ZREP_VARIABLES.items()
                if var in env
            }
        )


# EngineConfig field <- zrep's environment variable. The order is the order in which a bad
# value is found (the first one is reported).
ZREP_VARIABLES: dict[str, str] = {
    "tag": "ZREPTAG",
    "save_count": "ZREP_SAVE_COUNT",
    "init_remote_properties": "ZREP_INIT_REMOTE_PROPERTIES",
    "recursive": "ZREP_R",
    "send_flags": "ZREP_SEND_FLAGS",
    "inc_flag": "ZREP_INC_FLAG",
    "resume": "ZREP_RESUME",
    "outfilter": "ZREP_OUTFILTER",
    "infilter": "ZREP_INFILTER",
    "skip_expire": "ZREP_SKIP_EXPIRE",
    "rename_unsent": "ZREP_RENAME_UNSENT",
    "create_flags": "ZREP_CREATE_FLAGS",
    "src_host": "ZREP_SRC_HOST",
    "dateformat": "ZREP_DATEFORMAT",
    "rundir": "ZREP_RUNDIR",
    "bookmarks": "ZREPQ_BOOKMARKS",
    "decrypt": "ZREPQ_DECRYPT",
    "recv_unmounted": "ZREPQ_RECV_UNMOUNTED",
    "lock_marks": "ZREPQ_LOCK_MARKS",
}


def shell_words(name: str, text: str) -> list[str]:
    """`text` split into words as zrep's shell splits an unquoted `$VAR` with quotes honoured
    (`shlex`: quotes and backslashes, no other shell features); a `ConfigError` naming `name`
    when it cannot be split (an unbalanced quote, a backslash at the end)."""
    try:
        return shlex.split(text)
    except ValueError as e:  # shlex says only "No closing quotation" / "No escaped character"
        raise ConfigError(
            f"{name}: cannot split {text!r} into words: {str(e).lower()} "
            "(an unbalanced quote or a trailing backslash?)"
        ) from None


def zrep_value(field: str, text: str) -> Any:
    """EngineConfig `field` from the string zrep would have in its variable, with zrep's
    meaning (set but empty is not always unset: `ZREP_RENAME_UNSENT=` means no)."""
    if field == "save_count":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"ZREP_SAVE_COUNT must be a number, not {text!r}") from None
    if field == "init_remote_properties":
        props: list[tuple[str, str]] = []
        for item in shell_words("ZREP_INIT_REMOTE_PROPERTIES", text):
            try:
                props.append(validate_property_assignment(item))
            except ValidationError as e:
                raise ConfigError(f"ZREP_INIT_REMOTE_PROPERTIES: {e}") from None
        return tuple(props)
    if field == "recursive":
        if text.strip() not in ("", "-R"):
            raise ConfigError(f"ZREP_R must be empty or -R, not {text.strip()!r}")
        return text.strip() == "-R"
    if field in ("send_flags", "create_flags"):
        return tuple(shell_words(ZREP_VARIABLES[field], text))
    if field in ("resume", "bookmarks"):
        return resume_setting(text)  # on unless 0/no/off/false
    if field in ("decrypt", "recv_unmounted"):
        return text.strip().lower() in ("1", "yes", "on", "true")
    if field == "skip_expire":
        return bool(text.strip())
    if field == "rename_unsent":
        return text.strip() == "yes"
    if field == "tag":
        return text.strip() or DEFAULT_TAG
    if field == "dateformat":
        return text or DEFAULT_DATEFORMAT
    if field == "rundir":
        return text.strip()
    if field == "lock_marks":
        return text.strip().lower() or "auto"
    if field in ("outfilter", "infilter"):
        # Run as argv split like this (`workers.exec.quoting.filter_argv`): a filter that
        # cannot be split is a bad setting now, not a failed sync later.
        shell_words(ZREP_VARIABLES[field], text)
    return text.strip() or None  # inc_flag (None: derived from the tag), filters, src_host
