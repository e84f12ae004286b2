"""Two QEMU guests as two zrepq storage hosts, for tests/realzfs/test_e2e_realzfs.py.

- `zfsvm1` and `zfsvm2` share a private link (eth1, 10.0.3.1 and 10.0.3.2, names in every
  guest's /etc/hosts), so replication data goes guest to guest over ssh with the image's
  shared root key, as between two real storage hosts.
- zrepq is installed in each guest from this checkout: the package sources are copied in and
  `pip install`ed into /opt/zrepq, offline, from a wheelhouse of its dependencies downloaded
  on this machine by Debian's python3 (the guest's version; `pip download`, cached under the
  image cache, keyed on pyproject.toml and that Python version).
- Each guest runs `zrepq-worker` against this machine's Redis, which a guest reaches at
  10.0.2.2 (QEMU's user network maps it to the host's loopback).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.harness.netutil import REPO
from tests.realzfs.guest import Guest, GuestError, boot_all, free_port
from tests.realzfs.image import CACHE_ROOT, Image, log

GUEST_VENV = "/opt/zrepq"
GUEST_KEYS = "/root/zrepq-keys"  # the harness's signing keys, copied in by `guest_signing`
HOST_PYTHON = os.environ.get("ZREPQ_ZFSVM_HOST_PYTHON", "/usr/bin/python3")
PACKAGE_FILES = ("pyproject.toml", "README.md", "producer", "tasks", "workers")


def wheelhouse(python_version: str) -> Path:
    """Wheels of zrepq's dependencies and its build backend for the guest's Python, downloaded
    once per pyproject.toml and Python version. Debian's own python3 on this machine (the
    guest's version on a Debian 12 host) resolves them, so environment markers and binary
    wheels match the guest."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    digest = hashlib.sha256(pyproject + python_version.encode()).hexdigest()[:16]
    d = CACHE_ROOT / "wheels" / digest
    if (d / ".complete").exists():
        return d
    probe = subprocess.run(
        [HOST_PYTHON, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.stdout.strip() != python_version:
        raise GuestError(
            f"the guest has Python {python_version}, {HOST_PYTHON} here is "
            f"{probe.stdout.strip() or probe.stderr.strip()}: set ZREPQ_ZFSVM_HOST_PYTHON to a "
            "python of the guest's version (with pip) to build the wheelhouse"
        )
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    deps = tomllib.loads(pyproject.decode())["project"]["dependencies"]
    res = subprocess.run(
        [HOST_PYTHON, "-m", "pip", "download", "-q", "--dest", str(d), "--only-binary=:all:",
         *deps, "setuptools>=68", "wheel"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise GuestError(f"pip download for the guest failed:\n{res.stderr[-3000:]}")
    (d / ".complete").touch()
    log(f"wheelhouse {d} in {time.monotonic() - t0:.0f}s")
    return d


@dataclass
class StorageHost:
    guest: Guest
    name: str
    pool: str

    def sh(self, script: str, timeout: float = 300) -> str:
        res = self.guest.sh(script, timeout=timeout)
        if res.returncode != 0:
            raise GuestError(f"{self.name}: {script!r} exited {res.returncode}:\n{res.stderr}")
        return res.stdout

    def zfs(self, *args: str) -> str:
        return self.sh(shlex.join(["zfs", *args]))

    def get(self, prop: str, ds: str) -> str:
        return self.zfs("get", "-H", "-p", "-o", "value", prop, ds).strip()

    def snapshots(self, fs: str) -> list[str]:
        out = self.zfs("list", "-H", "-o", "name", "-s", "createtxg", "-t", "snapshot", fs)
        return [n.split("@", 1)[1] for n in out.split()]

    def checksums(self, fs: str) -> dict[str, str]:
        """{relative path: sha256} of the filesystem's files (mounted first if it is not: a
        received standby is readonly, so reading it changes nothing)."""
        if self.get("mounted", fs) != "yes":
            self.zfs("mount", fs)
        mp = self.get("mountpoint", fs)
        out = self.sh(f"cd {shlex.quote(mp)} && find . -type f -exec sha256sum {{}} + | sort -k2")
        return {line.split(None, 1)[1]: line.split()[0] for line in out.splitlines()}

    def write_random(self, fs: str, rel: str, mib: int) -> None:
        mp = self.get("mountpoint", fs)
        path = shlex.quote(f"{mp}/{rel}")
        self.sh(f"head -c {mib * 1048576} /dev/urandom > {path}")

    def worker_log(self) -> str:
        return self.guest.ssh("tail -n 80 /var/log/zrepq-worker.log").stdout


def boot_pair(image: Image) -> list[Guest]:
    port = free_port()
    guests = [
        Guest(image, "zfsvm1", link=("listen", port), link_index=1),
        Guest(image, "zfsvm2", link=("connect", port), link_index=2),
    ]
    boot_all(guests)
    return guests


def install_zrepq(guest: Guest, wheels: Path) -> None:
    """Copy the checkout's package sources and the wheelhouse in, pip install offline."""
    t0 = time.monotonic()
    src = Path(f"/var/tmp/zrepq-src-{guest.name}")
    subprocess.run(["rm", "-rf", str(src)], check=True)
    (src / "zrepq").mkdir(parents=True)
    for name in PACKAGE_FILES:
        subprocess.run(["cp", "-a", str(REPO / name), str(src / "zrepq" / name)], check=True)
    subprocess.run(
        ["find", str(src), "-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"],
        check=True,
    )
    try:
        guest.put(src / "zrepq", "/root/src")
        guest.put(wheels, "/root")
    finally:
        subprocess.run(["rm", "-rf", str(src)], check=True)
    # --no-compile: byte-compiling every installed module under TCG took most of the install
    # (7-8 min at load ~8, 2.8 min without); what is imported is compiled on first use
    script = (
        f"set -e; python3 -m venv {GUEST_VENV}; "
        f"{GUEST_VENV}/bin/pip install -q --no-compile --no-index --find-links "
        f"/root/{wheels.name} /root/src/zrepq"
    )
    res = guest.sh(script, timeout=900)
    if res.returncode != 0:
        raise GuestError(f"{guest.name}: pip install failed:\n{res.stdout}\n{res.stderr}")
    log(f"{guest.name}: zrepq installed in {time.monotonic() - t0:.0f}s")


def start_worker(host: StorageHost, redis_port: int, **extra: str) -> None:
    """`zrepq-worker` in the guest, against this machine's Redis; `extra` adds to its
    environment (bench/openzfs.py: concurrency, savecount)."""
    env = {
        "ZREPQ_HOST": host.name,
        "ZREPQ_BROKER_URL": f"redis://10.0.2.2:{redis_port}/0",
        "ZREPQ_SSH_ACCEPT_NEW": "1",
        "ZREPQ_CONCURRENCY": "2",
        **guest_signing(host),
        **extra,
    }
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    host.sh(
        f"{assignments} setsid {GUEST_VENV}/bin/zrepq-worker "
        "</dev/null >/var/log/zrepq-worker.log 2>&1 &"
    )


def guest_signing(host: StorageHost) -> dict[str, str]:
    """The harness's signing settings for a worker in the guest: its key (for the hand-overs
    of failover/takeover), the trusted public keys and the policy, copied in; the worker
    refuses to start without trusted keys, as in production."""
    from tests.harness.signing import keys

    out: dict[str, str] = {}
    for name, value in keys().items():
        path = Path(value)
        if name == "ZREPQ_SIGNING_IDENTITY" or not path.exists():
            out[name] = value
            continue
        host.guest.put(path, GUEST_KEYS)
        out[name] = f"{GUEST_KEYS}/{path.name}"
    return out


def wait_registered(client: redis.Redis, hosts: list[StorageHost], timeout: float = 180) -> None:
    """Until every host's worker has registered in Redis (it is consuming its queue)."""
    from workers.keys import host_key

    def registered(name: str) -> bool:
        raw = client.get(host_key(name))
        return bool(raw) and bool(json.loads(raw).get("registered"))

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(registered(h.name) for h in hosts):
            return
        time.sleep(1)
    logs = "\n".join(f"--- {h.name} worker log ---\n{h.worker_log()}" for h in hosts)
    raise GuestError(f"workers did not register within {timeout}s\n{logs}")
