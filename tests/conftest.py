"""Fixtures shared by every tier live in tests/harness; this file only registers them.

It also gives the whole session (and every process it starts, which inherit the environment)
its own directory for host-wide lock files: zrep's global lock (`ZREP_RUNDIR`) and
`zrepq-local`'s lock files (`ZREPQ_LOCK_DIR`), so tests neither touch /run nor contend with
other test sessions on this machine.
"""

import atexit
import os
import shutil
import tempfile

from tests.harness.signing import keys as signing_keys

pytest_plugins = [
    "tests.harness.standin_fixtures",
    "tests.harness.sshd_fixtures",
    "tests.harness.redis_fixtures",
    "tests.harness.fleet",
    "tests.realzfs.plugin",  # real OpenZFS in QEMU guests; inert unless --zfs/ZREPQ_REALZFS
]

if "ZREP_RUNDIR" not in os.environ:
    _run = tempfile.mkdtemp(prefix="zrepq-test-run-")
    atexit.register(shutil.rmtree, _run, True)
    os.environ["ZREP_RUNDIR"] = _run
    os.environ.setdefault("ZREPQ_LOCK_DIR", os.path.join(_run, "zrepq-locks"))

# Every process of the session signs and verifies task messages (tests/harness/signing.py).
signing_keys()
