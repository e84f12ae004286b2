"""Which OpenZFS release the stand-in imitates: ZFS_STANDIN_VERSION (default 2.1.16)
picks `zfs version` and the few messages and options that differ between releases."""

import os

STANDIN_VERSION_DEFAULT = "2.1.16"


def zversion() -> tuple:
    raw = os.environ.get("ZFS_STANDIN_VERSION", STANDIN_VERSION_DEFAULT)
    parts = []
    for p in raw.split("."):
        try:
            parts.append(int(p))
        except ValueError:
            parts.append(0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts[:3])
