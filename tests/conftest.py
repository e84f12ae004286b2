"""Fixtures shared by every tier live in tests/harness; this file only registers them."""

pytest_plugins = [
    "tests.harness.standin_fixtures",
    "tests.harness.sshd_fixtures",
    "tests.harness.redis_fixtures",
    "tests.harness.fleet",
    "tests.realzfs.plugin",  # real OpenZFS in QEMU guests; inert unless --zfs/ZREPQ_REALZFS
]
