"""`ZfsBackend` (tests/harness/zfs_backend.py) over real OpenZFS in a QEMU guest.

One guest per OpenZFS line serves the whole session (`GuestPool`, booted on first use).
Every test gets two fresh file-backed pools, `za<N>` and `zb<N>` (512 MiB sparse files in the
guest's /var/tmp), with an empty `ct` filesystem on each, destroyed after the test (in the
background, while the next test runs on new pools). Commands
run over ssh, so exit codes and stderr are OpenZFS's own.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
import time
from dataclasses import dataclass, field

from tests.harness.zfs_backend import ZfsResult, as_user
from tests.realzfs.guest import Guest, GuestError
from tests.realzfs.image import Image, ensure_image, log

VDEV_SIZE = "512M"
_counter = itertools.count(1)


class RealZfsBackend:
    """The contract tests' `ZfsBackend` on a guest: fresh pools `za<N>`/`zb<N>`."""

    def __init__(self, guest: Guest, name: str):
        self.guest = guest
        self.name = name
        n = next(_counter)
        self.pool, self.pool2 = f"za{n}", f"zb{n}"
        self.base, self.base2 = f"{self.pool}/ct", f"{self.pool2}/ct"
        self._vdevs = [f"/var/tmp/vdev-{p}" for p in (self.pool, self.pool2)]
        script = ["set -e", f"truncate -s {VDEV_SIZE} {' '.join(self._vdevs)}"]
        for pool, vdev in zip((self.pool, self.pool2), self._vdevs, strict=True):
            script.append(f"zpool create -f {pool} {vdev}")
        script += [f"zfs create {self.base}", f"zfs create {self.base2}"]
        res = self.sh("\n".join(script))
        if not res.ok:
            self.close()
            raise GuestError(f"cannot create test pools on {guest.name}:\n{res.stderr}")

    def _wrap(self, argv: tuple[str, ...], res: subprocess.CompletedProcess[str]) -> ZfsResult:
        return ZfsResult(argv, res.returncode, res.stdout, res.stderr)

    def zfs(self, *args: str, input: bytes | None = None, user: str | None = None) -> ZfsResult:
        argv = ("zfs", *args)
        return self._wrap(argv, self.guest.run(as_user(user, list(argv)), input=input))

    def zpool(self, *args: str) -> ZfsResult:
        argv = ("zpool", *args)
        return self._wrap(argv, self.guest.run(list(argv)))

    def sh(self, script: str, input: bytes | None = None, user: str | None = None) -> ZfsResult:
        argv = ("/bin/sh", "-c", script)
        return self._wrap(argv, self.guest.run(as_user(user, list(argv)), input=input))

    def close(self) -> None:
        """Destroy this test's pools and their files, in the background (the next test's pools
        have other names; a destroy that fails is logged in the guest's
        /var/tmp/pool-cleanup.log and costs only space in a throw-away overlay)."""
        cleanup = " ; ".join(
            [f"zpool destroy -f {p}" for p in (self.pool, self.pool2)]
            + [f"rm -f {' '.join(self._vdevs)}"]
        )
        script = (
            f"setsid sh -c {shlex.quote(cleanup)} </dev/null >>/var/tmp/pool-cleanup.log 2>&1 &"
        )
        try:
            res = self.guest.run(["/bin/sh", "-c", script], timeout=60)
            if res.returncode != 0:
                log(f"{self.guest.name}: cleanup of {self.pool}/{self.pool2}: {res.stderr}")
        except GuestError as e:
            log(f"{self.guest.name}: cleanup failed: {e}")


@dataclass
class Booted:
    label: str
    image: Image
    guest: Guest
    version: str  # `zfs version` output, both lines joined with " / "
    kernel: str
    boot_seconds: float
    tests: int = 0
    seconds: float = 0.0


@dataclass
class GuestPool:
    """One guest per OpenZFS line, booted on first use, all stopped by `close()`."""

    images: dict[str, Image] = field(default_factory=dict)
    booted: dict[str, Booted] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    history: list[Booted] = field(default_factory=list)

    def image(self, label: str) -> Image:
        if label not in self.images:
            self.images[label] = ensure_image(label)
        return self.images[label]

    def get(self, label: str) -> Booted:
        if label in self.errors:
            raise GuestError(self.errors[label])
        if label in self.booted and self.booted[label].guest.alive():
            return self.booted[label]
        try:
            img = self.image(label)
            guest = Guest(img, f"zfs{label.replace('.', '')}")
            t0 = time.monotonic()
            guest.__enter__()
            version = guest.ssh("zfs version", check=True).stdout.split()
            kernel = guest.ssh("uname -r", check=True).stdout.strip()
        except Exception as e:  # remembered: every later test of this line fails the same way
            self.errors[label] = f"OpenZFS {label} guest unavailable: {e}"
            raise GuestError(self.errors[label]) from e
        b = Booted(label, img, guest, " / ".join(version), kernel, time.monotonic() - t0)
        log(f"guest {guest.name}: {b.version}, kernel {kernel}, ssh ready in {b.boot_seconds:.0f}s")
        self.booted[label] = b
        self.history.append(b)
        return b

    def stop(self, label: str) -> None:
        b = self.booted.pop(label, None)
        if b is not None:
            b.guest.stop()

    def close(self) -> None:
        for label in list(self.booted):
            self.stop(label)
