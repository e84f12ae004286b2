"""Validation of everything that becomes part of a command line, and zrep's snapshot names.

Names are checked against ZFS's own naming rules *before* any argv is built, so a hostile or
mistyped name is refused with a clear message and nothing runs. Quoting still happens where a
string enters a shell; validation is the first fence, not the only one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ValidationError

# ZFS_MAX_DATASET_NAME_LEN is 256 including the terminating NUL.
MAX_NAME_LEN = 255
MAX_HOST_LEN = 253
# zfs_namecheck.c: a component may hold alphanumerics and - _ . : and space.
_COMPONENT = re.compile(r"[A-Za-z0-9_.:\- ]+")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# User property "module" part: lowercase alnum and - _ . (a colon would split the property).
_TAG = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,63}")
_SEQ = re.compile(r"(?P<seq>[0-9a-f]{6})(?P<rest>.*)")


def _component(name: str, what: str, part: str) -> None:
    if not part:
        raise ValidationError(f"invalid {what} name {name!r}: empty component")
    if part in (".", ".."):
        raise ValidationError(f"invalid {what} name {name!r}: '.' and '..' are not allowed")
    if not _COMPONENT.fullmatch(part):
        bad = sorted({c for c in part if not _COMPONENT.fullmatch(c)})
        raise ValidationError(
            f"invalid {what} name {name!r}: character(s) {''.join(bad)!r} are not allowed "
            "(ZFS names hold letters, digits, '-', '_', '.', ':' and space)"
        )
    if part != part.strip():
        raise ValidationError(f"invalid {what} name {name!r}: leading or trailing space")


def validate_dataset(name: str) -> str:
    """A filesystem or volume name: pool[/child...]. Returns it unchanged."""
    if not isinstance(name, str) or not name:
        raise ValidationError("dataset name is empty")
    if len(name) > MAX_NAME_LEN:
        raise ValidationError(f"invalid dataset name: longer than {MAX_NAME_LEN} characters")
    if "@" in name or "#" in name:
        raise ValidationError(
            f"invalid dataset name {name!r}: expected a filesystem, not a snapshot"
        )
    if name.startswith("-"):
        raise ValidationError(f"invalid dataset name {name!r}: must not start with '-'")
    if name.startswith("/") or name.endswith("/"):
        raise ValidationError(f"invalid dataset name {name!r}: leading or trailing '/'")
    parts = name.split("/")
    for part in parts:
        _component(name, "dataset", part)
    pool = parts[0]
    if not pool[0].isalpha():
        raise ValidationError(f"invalid dataset name {name!r}: pool name must begin with a letter")
    return name


def validate_snapshot(name: str) -> tuple[str, str]:
    """`fs@snap` → (fs, snap)."""
    if not isinstance(name, str) or name.count("@") != 1:
        raise ValidationError(f"invalid snapshot name {name!r}: expected filesystem@snapshot")
    if len(name) > MAX_NAME_LEN:
        raise ValidationError(f"invalid snapshot name: longer than {MAX_NAME_LEN} characters")
    fs, snap = name.split("@")
    validate_dataset(fs)
    _component(name, "snapshot", snap)
    return fs, snap


def validate_host(name: str) -> str:
    """A host name as zrep stores it in `zrep:dest-host` (a DNS name or an IPv4 address)."""
    if not isinstance(name, str) or not name:
        raise ValidationError("host name is empty")
    if len(name) > MAX_HOST_LEN:
        raise ValidationError(f"invalid host name: longer than {MAX_HOST_LEN} characters")
    if name.startswith("-"):
        raise ValidationError(f"invalid host name {name!r}: must not start with '-'")
    labels = name.split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValidationError(
            f"invalid host name {name!r}: use letters, digits, '-' and dots "
            "(no user@, ports or shell characters; put those in the ssh config)"
        )
    return name


def validate_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise ValidationError(
            f"invalid tag {tag!r}: lowercase letters, digits, '-', '_' and '.', at most 64"
        )
    return tag


def validate_property_assignment(text: str) -> tuple[str, str]:
    """`prop=value` as given in ZREP_INIT_REMOTE_PROPERTIES / ZREP_CREATE_FLAGS."""
    prop, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9_.:\-]*", prop):
        raise ValidationError(f"invalid property assignment {text!r}: expected property=value")
    if "\n" in value or "\0" in value:
        raise ValidationError(f"invalid property value in {text!r}")
    return prop, value


@dataclass(frozen=True, order=True)
class SnapName:
    """The short name of a zrep snapshot: `TAG_NNNNNN` plus an optional suffix (`_unsent`)."""

    seq: int
    tag: str
    suffix: str = ""

    def __str__(self) -> str:
        return f"{self.tag}_{self.seq:06x}{self.suffix}"


def parse_snapname(short: str, tag: str) -> SnapName | None:
    """Parse `zrep_00002a` / `zrep_00002a_unsent`; None for snapshots that are not ours.

    zrep matches `TAG_` followed by six hex digits and accepts any suffix after them.
    """
    prefix = f"{tag}_"
    if not short.startswith(prefix):
        return None
    m = _SEQ.fullmatch(short[len(prefix) :])
    if not m:
        return None
    return SnapName(int(m["seq"], 16), tag, m["rest"])


def first_snapname(tag: str) -> SnapName:
    return SnapName(0, tag)
