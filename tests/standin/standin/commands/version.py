"""zfs version (and zpool version)."""

import os

from ..options import getopts
from ..release import STANDIN_VERSION_DEFAULT


def cmd_version(host, args) -> int:
    getopts(args, "j", colon_msgs=False)
    v = os.environ.get("ZFS_STANDIN_VERSION", STANDIN_VERSION_DEFAULT)
    print("zfs-%s-1" % v)
    print("zfs-kmod-%s-1" % v)
    return 0
