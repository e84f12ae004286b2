"""Build (and cache) a bootable Debian 12 guest image with real OpenZFS, for QEMU.

    python -m tests.realzfs.image build --zfs 2.1 --zfs 2.3   # idempotent; prints the image dirs
    python -m tests.realzfs.image key --zfs 2.3               # the cache key, nothing built
    python -m tests.realzfs.image list                        # what the cache holds

One image per OpenZFS line: 2.1 is bookworm's contrib `zfs-dkms` on bookworm's cloud kernel
(6.1), 2.3 is bookworm-backports' on the backports cloud kernel (6.12). An image is a directory
`$ZREPQ_ZFSVM_CACHE/<key>/` (default /var/cache/zrepq-zfsvm) holding `base.img` (4 GiB sparse
raw ext4, never written by a guest: guests boot from qcow2 overlays), `vmlinuz`, `initrd.img`,
`id_ed25519[.pub]` (root's key, the same inside the guest so guests reach each other) and
`meta.json`. The key names the candidate versions of the kernel and zfs-dkms packages (looked up
with apt in a private state directory, not the host's) plus `RECIPE`: a new kernel ABI or ZFS
point release, or a change of recipe, makes a new key and so a new build.

Runs as root (debootstrap, chroot). Installs its host packages if missing. Must not run while
test guests are booted (2 cores): it waits for harness guests to go away first, and the guest
harness waits for a running build. Steps and timings go to stderr; the full output of every
command to `$ZREPQ_ZFSVM_CACHE/<key>.build.log`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Bump when anything below changes what goes into an image (forces a rebuild).
RECIPE = 1

CACHE_ROOT = Path(os.environ.get("ZREPQ_ZFSVM_CACHE", "/var/cache/zrepq-zfsvm"))
BUILD_ROOT = Path(os.environ.get("ZREPQ_ZFSVM_BUILD_DIR", "/var/tmp/zrepq-zfsvm-build"))
GUESTS_DIR = Path(os.environ.get("ZREPQ_ZFSVM_GUESTS_DIR", "/var/tmp/zrepq-guests"))
MIRROR = os.environ.get("ZREPQ_ZFSVM_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get(
    "ZREPQ_ZFSVM_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LOOKUP_MAX_AGE = 6 * 3600  # seconds a private apt index stays fresh enough for a key

# executable -> Debian package on the host
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
DEBOOTSTRAP_INCLUDE = (
    "systemd-sysv,udev,kmod,iproute2,openssh-server,openssh-client,python3,python3-venv,"
    "ca-certificates,procps"
)
KERNEL_PKGS = ("linux-image-cloud-amd64", "linux-headers-cloud-amd64")
ZFS_PKGS = ("zfs-dkms", "zfsutils-linux")
IMAGE_SIZE = "4G"
# eth1 (the private link between guests) gets 10.0.3.N when its MAC is LINK_MAC % N
LINK_MAC = "52:54:00:12:34:{:02x}"
ETH0_MAC = "52:54:00:12:34:56"
MAX_LINK_HOSTS = 8


@dataclass(frozen=True)
class Flavour:
    label: str  # "2.1" | "2.3"
    suite: str  # where zfs-dkms and the kernel come from
    target: str | None  # apt -t release, if not the default


FLAVOURS = {
    "2.1": Flavour("2.1", "bookworm", None),
    "2.3": Flavour("2.3", "bookworm-backports", "bookworm-backports"),
}


def log(msg: str) -> None:
    print(f"[zfsvm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def flavour(label: str) -> Flavour:
    label = label.removeprefix("real-").removeprefix("openzfs-")
    if label not in FLAVOURS:
        raise SystemExit(f"unknown OpenZFS line {label!r}: choose from {', '.join(FLAVOURS)}")
    return FLAVOURS[label]


# ------------------------------------------------------------------- images in the cache


@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def meta(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.dir / "meta.json").read_text())
        return data

    @property
    def base(self) -> Path:
        return self.dir / "base.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def key_file(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def zfs_version(self) -> str:
        """Upstream OpenZFS version of the image, e.g. '2.1.11'."""
        return upstream(str(self.meta["packages"]["zfs-dkms"]))  # type: ignore[index]

    def complete(self) -> bool:
        return (
            all(p.exists() for p in (self.base, self.kernel, self.initrd, self.key_file))
            and (self.dir / "meta.json").exists()
        )


def upstream(debver: str) -> str:
    """'2.1.11-1+deb12u1' -> '2.1.11'; '2.3.2-2~bpo12+1' -> '2.3.2'."""
    v = debver.split(":", 1)[-1]
    return re.split(r"[-~+]", v, maxsplit=1)[0]


def cache_key(fl: Flavour, pkgs: dict[str, str]) -> str:
    def clean(v: str) -> str:
        return re.sub(r"[^A-Za-z0-9.+~_-]", "_", v)

    return (
        f"{fl.label}-zfs_{clean(pkgs['zfs-dkms'])}-linux_{clean(pkgs['linux-image-cloud-amd64'])}"
        f"-r{RECIPE}"
    )


def cached_images(label: str | None = None) -> list[Image]:
    """Complete images in the cache (newest first), optionally of one OpenZFS line."""
    if not CACHE_ROOT.is_dir():
        return []
    found = []
    for d in CACHE_ROOT.iterdir():
        if not d.is_dir() or d.name.startswith("."):
            continue
        img = Image(d)
        if img.complete() and (label is None or d.name.startswith(f"{label}-")):
            found.append(img)
    return sorted(found, key=lambda i: (i.dir / "meta.json").stat().st_mtime, reverse=True)


# ------------------------------------------------------------------- host side


def run(
    argv: list[str], logf: Path | None = None, env: dict[str, str] | None = None, check=True
) -> subprocess.CompletedProcess[str]:
    """Run a command; with `logf`, its output is appended there (and shown if it fails)."""
    if logf is None:
        res = subprocess.run(argv, capture_output=True, text=True, env=env)
        if check and res.returncode != 0:
            raise BuildError(f"{' '.join(argv)} exited {res.returncode}:\n{res.stderr[-3000:]}")
        return res
    with logf.open("a") as f:
        f.write(f"\n$ {' '.join(argv)}\n")
        f.flush()
        res = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)
    if check and res.returncode != 0:
        tail = logf.read_text(errors="replace").splitlines()[-40:]
        raise BuildError(
            f"{' '.join(argv)} exited {res.returncode} (full log: {logf}):\n" + "\n".join(tail)
        )
    return res


class BuildError(RuntimeError):
    pass


def missing_host_packages() -> list[str]:
    return sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})


def ensure_host_packages() -> None:
    missing = missing_host_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError(f"host packages missing and not root: apt-get install {' '.join(missing)}")
    t0 = time.monotonic()
    log(f"installing host packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "-q", "-o", "DPkg::Lock::Timeout=600", "update"], env=env)
    run(
        ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600", "install",
         "--no-install-recommends", *missing],
        env=env,
    )  # fmt: skip
    log(f"host packages installed in {time.monotonic() - t0:.0f}s")


def _apt_lookup_opts(d: Path) -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={d / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={d / 'sources.list.d'}",
        "-o", f"Dir::Etc::Preferences={d / 'preferences'}",
        "-o", f"Dir::Etc::PreferencesParts={d / 'preferences.d'}",
        "-o", f"Dir::State::Lists={d / 'lists'}",
        "-o", f"Dir::State::status={d / 'status'}",
        "-o", f"Dir::Cache={d / 'cache'}",
        "-o", "APT::Architecture=amd64",
        "-o", "APT::Sandbox::User=root",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip


def guest_sources() -> str:
    lines = []
    for suite in ("bookworm", "bookworm-updates", "bookworm-backports"):
        lines.append(f"deb [signed-by={KEYRING}] {MIRROR} {suite} main contrib")
    lines.append(f"deb [signed-by={KEYRING}] {SECURITY_MIRROR} bookworm-security main contrib")
    return "\n".join(lines) + "\n"


def candidate_versions(fl: Flavour, refresh: bool = False) -> dict[str, str]:
    """Versions apt would install into the guest now, from a private apt state directory."""
    d = CACHE_ROOT / ".apt-lookup"
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "sources.list").write_text(guest_sources())
    (d / "status").touch()
    opts = _apt_lookup_opts(d)
    stamp = d / "updated"
    fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < LOOKUP_MAX_AGE
    if refresh or not fresh or os.environ.get("ZREPQ_ZFSVM_REFRESH"):
        run(["apt-get", "-q", *opts, "update"])
        stamp.touch()
    if fl.target:
        opts += ["-o", f"APT::Default-Release={fl.target}"]
    names = [*KERNEL_PKGS, *ZFS_PKGS]
    out = run(["apt-cache", *opts, "policy", *names]).stdout
    found: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            found[current] = line.split(":", 1)[1].strip()
    missing = [n for n in names if found.get(n) in (None, "(none)")]
    if missing:
        raise BuildError(f"apt finds no candidate for {missing} in {fl.suite}:\n{out}")
    return found


def resolve(label: str, offline_ok: bool = True) -> tuple[str, dict[str, str]]:
    """(cache key, package versions) for an OpenZFS line. Offline, the newest cached image."""
    fl = flavour(label)
    try:
        pkgs = candidate_versions(fl)
    except (BuildError, OSError) as e:
        cached = cached_images(fl.label)
        if offline_ok and cached:
            log(f"apt lookup failed ({str(e).splitlines()[0]}); using cached {cached[0].dir.name}")
            meta = cached[0].meta
            return cached[0].dir.name, dict(meta["packages"])  # type: ignore[call-overload]
        raise
    return cache_key(fl, pkgs), pkgs


@contextlib.contextmanager
def build_lock(shared: bool = False) -> Iterator[None]:
    """Exclusive for a build; shared for a guest boot (so no guest starts during a build)."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / ".build.lock").open("a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another image build to finish" if shared else
                "waiting for another build (or a guest boot) to finish")  # fmt: skip
            fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def running_guests() -> list[int]:
    """Pids of harness guests (tests/realzfs/guest.py) still alive."""
    pids = []
    if GUESTS_DIR.is_dir():
        for pidfile in GUESTS_DIR.glob("*/qemu.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                if b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
    return pids


def wait_no_guests(timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    pids = running_guests()
    if pids:
        log(f"waiting for test guests {pids} to stop before building (2 cores)")
    while pids:
        if time.monotonic() > deadline:
            raise BuildError(f"test guests {pids} still running; stop them before a build")
        time.sleep(5)
        pids = running_guests()


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix) or mp == prefix[:-1]:
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def umount_all(path: Path) -> None:
    for mp in mounts_under(path):
        if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mp], capture_output=True)
    left = mounts_under(path)
    if left:
        raise BuildError(f"cannot unmount {left}")


def safe_rmtree(path: Path) -> None:
    """rm -rf, but never through a mount (a chroot with /dev bound in)."""
    if not path.exists():
        return
    umount_all(path)
    shutil.rmtree(path)


# ------------------------------------------------------------------- the build


class Builder:
    def __init__(self, fl: Flavour, key: str, pkgs: dict[str, str]):
        self.fl, self.key, self.pkgs = fl, key, pkgs
        self.out = CACHE_ROOT / key
        self.tmp_out = CACHE_ROOT / f".{key}.partial"
        self.root = BUILD_ROOT / key / "root"
        self.logf = CACHE_ROOT / f"{key}.build.log"
        self.timings: dict[str, float] = {}

    def step(self, name: str, fn, *args) -> None:  # type: ignore[no-untyped-def]
        log(f"{self.fl.label}: {name} ...")
        t0 = time.monotonic()
        fn(*args)
        dt = time.monotonic() - t0
        self.timings[name] = round(dt, 1)
        log(f"{self.fl.label}: {name} done in {dt:.0f}s")

    def build(self) -> Image:
        t0 = time.monotonic()
        self.logf.write_text(f"build of {self.key} at {time.ctime()}\n")
        log(f"building {self.key} (log: {self.logf})")
        safe_rmtree(self.root.parent)
        safe_rmtree(self.tmp_out)
        self.root.mkdir(parents=True)
        self.tmp_out.mkdir(parents=True)
        try:
            self.step("debootstrap", self.debootstrap)
            self.step("kernel + zfs-dkms", self.install)
            self.step("configure", self.configure)
            self.step("mkfs", self.mkimage)
        finally:
            umount_all(self.root)
        self.timings["total"] = round(time.monotonic() - t0, 1)
        meta = {
            "key": self.key,
            "label": self.fl.label,
            "suite": self.fl.suite,
            "packages": self.pkgs,
            "kernel": self.kver,
            "zfs_version": upstream(self.pkgs["zfs-dkms"]),
            "recipe": RECIPE,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "timings": self.timings,
        }
        (self.tmp_out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        safe_rmtree(self.out)
        self.tmp_out.rename(self.out)
        safe_rmtree(self.root.parent)
        log(f"{self.fl.label}: image {self.out} built in {self.timings['total']:.0f}s")
        return Image(self.out)

    def chroot(self, *cmd: str) -> None:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "LC_ALL": "C.UTF-8",
            "HOME": "/root",
        }
        run(["chroot", str(self.root), *cmd], self.logf, env=env)

    def debootstrap(self) -> None:
        run(
            ["debootstrap", "--variant=minbase", "--components=main,contrib",
             f"--include={DEBOOTSTRAP_INCLUDE}", f"--keyring={KEYRING}",
             "bookworm", str(self.root), MIRROR],
            self.logf,
        )  # fmt: skip

    def install(self) -> None:
        r = self.root
        (r / "etc/apt/sources.list").write_text(guest_sources())
        policy = r / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        for sub in ("proc", "sys", "dev", "dev/pts"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "proc", "proc", str(r / "proc")], self.logf)
        run(["mount", "-t", "sysfs", "sys", str(r / "sys")], self.logf)
        run(["mount", "--bind", "/dev", str(r / "dev")], self.logf)
        run(["mount", "--bind", "/dev/pts", str(r / "dev/pts")], self.logf)
        try:
            apt = ["apt-get", "-q", "-y", "--no-install-recommends"]
            if self.fl.target:
                apt += ["-t", self.fl.target]
            self.chroot("apt-get", "-q", "update")
            self.chroot(*apt, "install", *(f"{p}={self.pkgs[p]}" for p in KERNEL_PKGS))
            # dkms builds for the kernel installed above, not the host's `uname -r`
            self.chroot(*apt, "install", "dkms", *(f"{p}={self.pkgs[p]}" for p in ZFS_PKGS))
            self.chroot("apt-get", "clean")
        finally:
            umount_all(r)
        policy.unlink()
        mods = sorted((r / "lib/modules").glob("*/updates/dkms/zfs.ko*"))
        if not mods:
            raise BuildError(f"dkms built no zfs module (see {self.logf})")
        self.kver = mods[-1].relative_to(r / "lib/modules").parts[0]
        log(f"{self.fl.label}: zfs module for {self.kver}: {mods[-1].name}")

    def configure(self) -> None:
        r = self.root

        def write(rel: str, text: str, mode: int = 0o644) -> None:
            p = r / rel.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            p.chmod(mode)

        write("/etc/hostname", "zfsvm\n")
        hosts = "127.0.0.1\tlocalhost\n"
        hosts += "".join(f"10.0.3.{n}\tzfsvm{n}\n" for n in range(1, MAX_LINK_HOSTS + 1))
        write("/etc/hosts", hosts)
        write("/etc/fstab", "/dev/vda\t/\text4\trw,noatime\t0\t0\n")
        (r / "etc/resolv.conf").unlink(missing_ok=True)
        write("/etc/resolv.conf", "nameserver 10.0.2.3\n")
        # root's key: the host logs in with it, and guests use it to reach each other
        key = self.tmp_out / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "zrepq-zfsvm", "-f", str(key)])
        pub = (self.tmp_out / "id_ed25519.pub").read_text()
        (r / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        write("/root/.ssh/authorized_keys", pub, 0o600)
        write("/root/.ssh/id_ed25519", key.read_text(), 0o600)
        write("/root/.ssh/id_ed25519.pub", pub)
        write(
            "/root/.ssh/config",
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
            "  LogLevel ERROR\n",
            0o600,
        )
        write(
            "/etc/ssh/sshd_config.d/zrepq.conf",
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
            "MaxStartups 100:30:200\nMaxSessions 100\n",
        )
        # networkd by MAC: eth0 is slirp's fixed address (no DHCP wait); eth1 picks 10.0.3.N
        write(
            "/etc/systemd/network/10-eth0.network",
            f"[Match]\nMACAddress={ETH0_MAC}\n\n[Network]\nAddress=10.0.2.15/24\n"
            "Gateway=10.0.2.2\nDNS=10.0.2.3\n",
        )
        for n in range(1, MAX_LINK_HOSTS + 1):
            write(
                f"/etc/systemd/network/20-link{n}.network",
                f"[Match]\nMACAddress={LINK_MAC.format(n)}\n\n[Network]\nAddress=10.0.3.{n}/24\n",
            )
        write(
            "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf",
            "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud "
            "115200,57600,38400,9600 %I $TERM\n",
        )
        write("/etc/modules-load.d/zfs.conf", "zfs\n")
        self.chroot("systemctl", "enable", "systemd-networkd.service")
        self.chroot(
            "systemctl", "mask", "systemd-networkd-wait-online.service",
            "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
            "e2scrub_reap.service", "fstrim.timer", "man-db.timer", "dpkg-db-backup.timer",
            "zfs-zed.service", "zfs-import-cache.service", "zfs-import-scan.service",
            "zfs-share.service", "zfs-scrub-monthly@.timer", "zfs-trim-monthly@.timer",
        )  # fmt: skip
        self.chroot("passwd", "-d", "root")
        for junk in ("var/lib/apt/lists", "var/cache/apt"):
            for p in (r / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        boot = r / "boot"
        shutil.copyfile(boot / f"vmlinuz-{self.kver}", self.tmp_out / "vmlinuz")
        shutil.copyfile(boot / f"initrd.img-{self.kver}", self.tmp_out / "initrd.img")

    def mkimage(self) -> None:
        run(
            ["mkfs.ext4", "-q", "-F", "-L", "zfsvmroot", "-E",
             "lazy_itable_init=0,lazy_journal_init=0", "-d", str(self.root),
             str(self.tmp_out / "base.img"), IMAGE_SIZE],
            self.logf,
        )  # fmt: skip


def ensure_image(label: str, force: bool = False) -> Image:
    """The cached image for an OpenZFS line, built first if the cache has none for its key."""
    ensure_host_packages()
    fl = flavour(label)
    t0 = time.monotonic()
    key, pkgs = resolve(fl.label)
    img = Image(CACHE_ROOT / key)
    if img.complete() and not force:
        log(f"{fl.label}: cached image {img.dir} (key lookup {time.monotonic() - t0:.1f}s)")
        return img
    if os.geteuid() != 0:
        raise BuildError("building a guest image needs root (debootstrap, chroot)")
    with build_lock():
        if img.complete() and not force:  # built by someone else while we waited
            return img
        wait_no_guests()
        return Builder(fl, key, pkgs).build()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.realzfs.image", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("command", choices=["build", "key", "list"])
    ap.add_argument("--zfs", action="append", help="2.1, 2.3 or all (repeatable)")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = ap.parse_args(argv)
    labels: list[str] = []
    for v in args.zfs or ["all"]:
        for part in v.split(","):
            labels += list(FLAVOURS) if part == "all" else [flavour(part).label]
    try:
        if args.command == "list":
            for img in cached_images():
                m = img.meta
                print(f"{img.dir}\tzfs {m['zfs_version']}\tkernel {m['kernel']}\t{m['built']}")
        elif args.command == "key":
            for label in labels:
                key, pkgs = resolve(label, offline_ok=False)
                print(key, json.dumps(pkgs))
        else:
            t0 = time.monotonic()
            for label in labels:
                print(ensure_image(label, force=args.force).dir, flush=True)
            log(f"all done in {time.monotonic() - t0:.0f}s")
    except BuildError as e:
        log(f"FAILED: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
