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
    def from_env(cls, env: Mapping[str, str] | None = None) -> EngineConfig:
        env = os.environ if env is None else env

        def flag(name: str) -> bool:
            return bool(env.get(name, "").strip())

        tag = env.get("ZREPTAG", "").strip() or DEFAULT_TAG
        try:
            save_count = int(env.get("ZREP_SAVE_COUNT", str(DEFAULT_SAVE_COUNT)))
        except ValueError:
            raise ConfigError(
                f"ZREP_SAVE_COUNT must be a number, not {env['ZREP_SAVE_COUNT']!r}"
            ) from None
        inc_default = "-I" if tag == DEFAULT_TAG else "-i"
        timeout = env.get("ZREPQ_COMMAND_TIMEOUT", "").strip()
        try:
            command_timeout = float(timeout) if timeout else DEFAULT_COMMAND_TIMEOUT
        except ValueError:
            raise ConfigError(
                f"ZREPQ_COMMAND_TIMEOUT must be a number of seconds, not {timeout!r}"
            ) from None
        props: list[tuple[str, str]] = []
        for item in shlex.split(env.get("ZREP_INIT_REMOTE_PROPERTIES", "")):
            try:
                props.append(validate_property_assignment(item))
            except ValidationError as e:
                raise ConfigError(f"ZREP_INIT_REMOTE_PROPERTIES: {e}") from None
        zr = env.get("ZREP_R", "").strip()
        if zr not in ("", "-R"):
            raise ConfigError(f"ZREP_R must be empty or -R, not {zr!r}")
        return cls(
            tag=tag,
            save_count=save_count,
            recursive=zr == "-R",
            send_flags=tuple(shlex.split(env.get("ZREP_SEND_FLAGS", ""))),
            inc_flag=env.get("ZREP_INC_FLAG", "").strip() or inc_default,
            resume=resume_setting(env.get("ZREP_RESUME")),
            outfilter=env.get("ZREP_OUTFILTER", "").strip() or None,
            infilter=env.get("ZREP_INFILTER", "").strip() or None,
            skip_expire=flag("ZREP_SKIP_EXPIRE"),
            rename_unsent=env.get("ZREP_RENAME_UNSENT", "yes").strip() == "yes",
            create_flags=tuple(shlex.split(env.get("ZREP_CREATE_FLAGS", ""))),
            init_remote_properties=tuple(props),
            src_host=env.get("ZREP_SRC_HOST", "").strip() or None,
            dateformat=env.get("ZREP_DATEFORMAT", "") or DEFAULT_DATEFORMAT,
            rundir=env.get("ZREP_RUNDIR", "").strip(),
            command_timeout=command_timeout,
        )
