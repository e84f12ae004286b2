"""The tools a user would pick instead of zrepq, run against the same stand-in hosts and
sshd as zrepq: syncoid and zfs-autobackup. How each is run, and what a run costs.

- syncoid 2.1.0, Debian 12's `sanoid` package (`scripts/setup.sh` installs it, with a
  two-line package standing in for zfsutils so apt pulls in no zfs-fuse). Perl; every zfs
  call is a shell command, the target's through one ssh ControlMaster per invocation.
  Settings: `--compress=none` (its default is lzop; the link here is loopback, where
  compressing only costs CPU), `--quiet` (no `pv` progress bar, as from cron). mbuffer
  stays: syncoid puts it on both sides whenever it is installed (sanoid depends on it) and
  has no option against it. Its `--no-command-checks` does nothing in 2.1.0 (the option's
  key is misspelt in the code), so every invocation probes `command -v mbuffer` and
  `zpool get feature@extensible_dataset` on both sides. syncoid 2.1.0 has no option for an
  ssh_config file: the harness config's options for the host go as `--sshoption=K=V`.
  Run per dataset (`syncoid SRC root@HOST:DST`, a cron loop) and once over the parent
  (`--recursive --skip-parent`). Retention: it keeps one sync snapshot per side and
  destroys the previous one after each sync.
- zfs-autobackup 3.3, PyPI (the `test` extra). Python; one ssh per remote command, so it
  runs with the ControlMaster its wiki recommends ("Performance tips: Speeding up SSH",
  `ControlMaster auto`, `ControlPersist 3600`, in its own ssh_config). Settings from the
  same page: `--allow-empty` (snapshot without asking what changed: zrep's and syncoid's
  behaviour too), `--clear-mountpoint` (received datasets are not mounted),
  `--keep-source=1 --keep-target=1` (the newest one kept: each run destroys one old
  snapshot per side). With its defaults it holds the common snapshot on both sides and
  checks guids; its "fastest" run adds `--no-holds --no-guid-check`, which give up both.
  `--strip-path 2` maps SRCPOOL/data/dNNN to DSTPOOL/data/dNNN.

Neither is changed or patched; both find `zfs`, `zpool`, `mbuffer`, `ssh` on PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO

ZAB_NAME = "bench"  # zfs-autobackup's backup name: property autobackup:bench, snapshots bench-*
ZAB_VERSION = "3.3"  # as pinned in pyproject.toml
# Debian 12's sanoid and what it needs beyond a Debian 12 system with perl and zfsutils
# (the guests of bench/openzfs.py install these .debs offline)
SANOID_DEBS = (
    "sanoid", "pv", "lzop", "liblzo2-2", "mbuffer", "libcapture-tiny-perl",
    "libconfig-inifiles-perl",
)  # fmt: skip
SYNCOID_OPTIONS = ("--compress=none", "--quiet")
ZAB_OPTIONS = ("--allow-empty", "--clear-mountpoint", "--keep-source=1", "--keep-target=1")
ZAB_FASTEST = ("--no-holds", "--no-guid-check")


def syncoid_path() -> str | None:
    return shutil.which("syncoid") or (
        "/usr/sbin/syncoid" if os.access("/usr/sbin/syncoid", os.X_OK) else None
    )


def zab_path() -> str | None:
    here = Path(sys.executable).parent / "zfs-autobackup"
    return str(here) if here.exists() else shutil.which("zfs-autobackup")


def missing() -> str | None:
    """Why the peers cannot run here (what to install), or None."""
    if syncoid_path() is None:
        return "syncoid not found (Debian: apt-get install sanoid; scripts/setup.sh does it)"
    if zab_path() is None:
        return "zfs-autobackup not found (pip install -e '.[test]'; scripts/setup.sh does it)"
    for exe in ("mbuffer", "perl"):
        if shutil.which(exe) is None:
            return f"{exe} not found (a dependency of Debian's sanoid)"
    return None


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, exe in (("syncoid", syncoid_path()), ("zfs-autobackup", zab_path())):
        if exe is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            p = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
            m = re.search(r"v?(\d+\.\d+(?:\.\d+)?)", p.stdout + p.stderr)
            if m:
                out[name] = m.group(1)
    return out


# ---- syncoid ----------------------------------------------------------------------------


def stanza_options(config_file: Path, host: str) -> list[tuple[str, str]]:
    """The (keyword, value) pairs of `Host host` in an ssh_config the harness wrote."""
    out: list[tuple[str, str]] = []
    current = None
    for line in config_file.read_text().splitlines():
        words = line.split(None, 1)
        if not words:
            continue
        if words[0] == "Host":
            current = words[1].strip()
        elif current == host and len(words) == 2:
            out.append((words[0], words[1].strip()))
    if not out:
        raise ValueError(f"no Host {host} in {config_file}")
    return out


def syncoid_argv(config_file: Path, host: str, src: str, dst: str, *extra: str) -> list[str]:
    """`syncoid SRC root@HOST:DST` at the settings above, reaching HOST as the harness's
    ssh_config does (its options one by one: syncoid 2.1.0 takes no config file)."""
    exe = syncoid_path()
    if exe is None:
        raise RuntimeError(missing() or "syncoid missing")
    ssh = [f"--sshoption={k}={v}" for k, v in stanza_options(config_file, host) if k != "User"]
    return [exe, *SYNCOID_OPTIONS, *extra, *ssh, src, f"root@{host}:{dst}"]


# ---- zfs-autobackup ---------------------------------------------------------------------


def zab_ssh_config(config_file: Path, out: Path, control_dir: Path) -> Path:
    """The harness's ssh_config plus the ControlMaster zfs-autobackup's wiki recommends."""
    control_dir.mkdir(parents=True, exist_ok=True)
    text = config_file.read_text().rstrip("\n")
    out.write_text(
        f"{text}\n\nHost *\n    ControlPath {control_dir}/%C\n    ControlMaster auto\n"
        "    ControlPersist 3600\n"
    )
    return out


def zab_argv(
    config: Path | str,
    host: str,
    target_path: str,
    *extra: str,
    strip: int = 2,
    name: str = ZAB_NAME,
    exe: str | None = None,
) -> list[str]:
    """`zfs-autobackup ... NAME TARGET_PATH` at the settings above; the source datasets are
    those with `autobackup:NAME` set (`child` on their parent)."""
    exe = exe or zab_path()
    if exe is None:
        raise RuntimeError(missing() or "zfs-autobackup missing")
    return [
        exe, "--ssh-config", str(config), "--ssh-target", host, "--strip-path", str(strip),
        *ZAB_OPTIONS, *extra, name, target_path,
    ]  # fmt: skip


def zab_close(config: Path, host: str) -> str:
    """The shell command that ends zfs-autobackup's persisting ControlMaster to `host`."""
    return f"ssh -F {config} -O exit {host}"


# ---- running, with every process's CPU counted ---------------------------------------------


def run_reaped(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    after: str | None = None,
    timeout: float = 7200,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` under `bench.reaper` (daemonized ssh masters stay in our process tree,
    their CPU counted); `after` runs when it ends (closing a persisting master)."""
    wrapper = [sys.executable, "-m", "bench.reaper"]
    if after:
        wrapper += ["--after", after]
    full_env = {**env, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*wrapper, "--", *argv],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# ---- what a run cost: zfs calls, snapshots destroyed, ssh connections --------------------


class LogMark:
    """Lines appended to a log file since the mark."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        return data.decode(errors="replace").splitlines()


@dataclass
class Cost:
    """What one run made, on the source (a) and the target (b)."""

    zfs_a: int = 0
    zfs_b: int = 0
    zpool_a: int = 0
    zpool_b: int = 0
    destroy_a: int = 0  # `zfs destroy` of snapshots
    destroy_b: int = 0
    connections: int = 0  # ssh connections accepted by the target's sshd
    sessions: int = 0  # commands run there (one per session; a connection can carry many)

    @property
    def calls(self) -> int:
        return self.zfs_a + self.zfs_b + self.zpool_a + self.zpool_b

    def per(self, n: int) -> dict[str, float]:
        return {
            "calls": self.calls / n,
            "calls_a": (self.zfs_a + self.zpool_a) / n,
            "calls_b": (self.zfs_b + self.zpool_b) / n,
            "zpool": (self.zpool_a + self.zpool_b) / n,
            "destroy_a": self.destroy_a / n,
            "destroy_b": self.destroy_b / n,
            "connections": self.connections / n,
            "sessions": self.sessions / n,
        }


def _argvs(lines: list[str]) -> list[list[str]]:
    import json

    out = []
    for ln in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(ln)["argv"])
    return out


@contextlib.contextmanager
def tally(a_root: Path, b_root: Path, sshd_log: Path) -> Iterator[Cost]:
    """Count the stand-in calls on both hosts (their call logs) and the target sshd's
    accepted connections and sessions (its log, LogLevel VERBOSE) during the block."""
    marks = [LogMark(a_root / "calls.log"), LogMark(b_root / "calls.log"), LogMark(sshd_log)]
    cost = Cost()
    try:
        yield cost
    finally:
        for side, mark in (("a", marks[0]), ("b", marks[1])):
            for argv in _argvs(mark.lines()):
                prog, sub = argv[0], argv[1] if len(argv) > 1 else ""
                key = f"{'zpool' if prog == 'zpool' else 'zfs'}_{side}"
                setattr(cost, key, getattr(cost, key) + 1)
                if prog == "zfs" and sub == "destroy" and any("@" in a for a in argv[2:]):
                    name = f"destroy_{side}"
                    setattr(cost, name, getattr(cost, name) + 1)
        for ln in marks[2].lines():
            if "Accepted publickey for" in ln:
                cost.connections += 1
            elif "Starting session:" in ln:
                cost.sessions += 1


def newest_snapshots(host: Any, parent: str) -> dict[str, tuple[str, str, int]]:
    """{dataset: (newest snapshot name, its guid, how many snapshots)} under `parent`, from
    one `zfs list` (checks a run's result without many calls)."""
    out = host.zfs("list", "-H", "-p", "-o", "name,guid", "-t", "snapshot", "-s", "createtxg",
                   "-r", parent).stdout  # fmt: skip
    res: dict[str, tuple[str, str, int]] = {}
    for line in out.splitlines():
        name, guid = line.split("\t")
        fs, _, snap = name.partition("@")
        count = res[fs][2] + 1 if fs in res else 1
        res[fs] = (snap, guid, count)
    return res


def check_replicated(a: Any, b: Any, src_parent: str, dst_parent: str, n: int) -> str | None:
    """None when each of the `n` datasets under src_parent has its newest snapshot (same
    guid) on the target under dst_parent; else what is wrong."""
    sa, sb = newest_snapshots(a, src_parent), newest_snapshots(b, dst_parent)
    if len(sa) != n:
        return f"{len(sa)} datasets with snapshots under {src_parent}, expected {n}"
    for fs, (snap, guid, _) in sa.items():
        dst = dst_parent + fs[len(src_parent) :]
        got = sb.get(dst)
        if got is None or got[:2] != (snap, guid):
            return f"{dst}: newest {got[:2] if got else None}, source has {(snap, guid)}"
    return None


def snapshot_counts(host: Any, parent: str) -> dict[str, int]:
    return {fs: v[2] for fs, v in newest_snapshots(host, parent).items()}
