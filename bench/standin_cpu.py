"""CPU time of one stand-in `zfs` call, for the commands the engine makes most.

    .venv/bin/python -m bench.standin_cpu                      # this tree's tests/standin
    .venv/bin/python -m bench.standin_cpu --baseline DIR       # side by side with another copy
    .venv/bin/python -m bench.standin_cpu --runs 50 --importtime --fill 200

Every stand-in call is a new Python process, so what it imports and does before and after
the command is paid on every call (a `sync all` makes ~15 per dataset). This builds one
simulated host (a pool, `poola/src` with 20 snapshots and the zrep properties the engine
reads), then runs each command `--runs` times through the `zfs` wrapper and takes the CPU of
each call from `wait4` (user + system of the process and its children: the wrapper's shell,
the interpreter, for send | recv both sides). `--fill N` adds N more filesystems with those
properties and 3 snapshots each (a larger state file, as on a host with many datasets). With
`--baseline`, the two copies alternate
call by call, so load on the shared machine falls on both alike. Prints a markdown table of
medians (and the 10th-90th percentile spread). `--importtime` adds the total import time of
one `zfs get` from `python -X importtime`.

Benchmark-only: nothing in zrepq imports this.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = os.environ.get("ZFS_STANDIN_PYTHON", "/usr/bin/python3")

# What the engine's state read asks for (workers/engine/zfs.py `_get_depth1`): the zrep pair
# and lock properties, zrepq's own, the natives, and per snapshot guid/createtxg/creation/sent.
ENGINE_KEYS = ",".join(
    [
        *(f"zrep:{k}" for k in ("src-fs", "src-host", "dest-fs", "dest-host", "savecount")),
        *(f"zrep:{k}" for k in ("master", "lock-pid", "lock-time")),
        *(f"zrepq:zrep:{k}" for k in ("paused", "last-error")),
        "readonly", "mountpoint", "receive_resume_token",
        "guid", "createtxg", "creation", "zrep:sent",
    ]
)  # fmt: skip


class Host:
    """One simulated host for one copy of the stand-in."""

    def __init__(self, bindir: Path, root: Path):
        self.bindir = bindir
        self.root = root
        self.env = {
            "PATH": f"{bindir}:/usr/bin:/bin",
            "ZFS_STANDIN_ROOT": str(root),
            "ZFS_STANDIN_PYTHON": PY,
        }

    def run(self, script: str, env: dict[str, str] | None = None) -> float:
        """Run a /bin/sh script; its CPU seconds (user + system, with its children)."""
        proc = subprocess.Popen(
            ["/bin/sh", "-c", script],
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        errout = proc.stderr.read()
        _pid, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{script!r} exited {proc.returncode}: {errout.decode()}")
        return ru.ru_utime + ru.ru_stime

    def zfs(self, *args: str) -> None:
        subprocess.run(["zfs", *args], env=self.env, check=True, capture_output=True)

    def setup(self, fill: int, runs: int) -> None:
        subprocess.run(["zpool", "create", "poola", "/dev/x"], env=self.env, check=True)
        subprocess.run(["zpool", "create", "poolb", "/dev/x"], env=self.env, check=True)
        self.zfs("create", "-o", "zrep:src-fs=poola/src", "-o", "zrep:dest-fs=poolb/dst",
                 "-o", "zrep:master=yes", "poola/src")  # fmt: skip
        mnt = self.root / "mnt" / "poola" / "src"
        for i in range(20):
            (mnt / f"f{i}").write_bytes(os.urandom(4096))
            self.zfs("snapshot", f"poola/src@zrep_{i:06x}")
            self.zfs("set", f"zrep:sent={1_700_000_000 + i}", f"poola/src@zrep_{i:06x}")
        self.zfs("create", "poola/small")
        (self.root / "mnt" / "poola" / "small" / "f").write_bytes(b"x" * 10_000)
        self.zfs("snapshot", "poola/small@s1")
        self.zfs("create", "poola/snaps")
        # a chain of small incrementals, the first one already on poolb (the engine's syncs)
        self.zfs("create", "poola/inc")
        for i in range(runs + 1):
            (self.root / "mnt" / "poola" / "inc" / f"f{i}").write_bytes(os.urandom(4096))
            self.zfs("snapshot", f"poola/inc@c{i}")
        subprocess.run("zfs send poola/inc@c0 | zfs recv poolb/inc", shell=True, env=self.env,
                       check=True, capture_output=True)  # fmt: skip
        for i in range(fill):
            self.zfs("create", "-p", "-o", f"zrep:src-fs=poola/fill/d{i:03d}",
                     "-o", "zrep:dest-fs=poolb/x", "-o", "zrep:master=yes",
                     f"poola/fill/d{i:03d}")  # fmt: skip
        for s in range(3 if fill else 0):
            self.zfs("snapshot", "-r", f"poola/fill@zrep_{s:06x}")


def commands(h: Host, fill: int) -> dict[str, Callable[[int], str]]:
    """name -> (iteration -> shell script); each iteration's script is new where it must be.
    With --fill, no `zfs list` of everything: it sums the space of every filesystem."""
    every = {} if fill else {"zfs list (all, default columns)": lambda i: "zfs list"}
    return {
        "zfs version": lambda i: "zfs version",
        "zfs get -H -p -d 1 (engine read, 20 snaps)": lambda i: (
            "zfs get -H -p -d 1 -t filesystem,volume,snapshot -o name,property,value,source "
            f"{ENGINE_KEYS} poola/src"
        ),
        "zfs list -H -o name DS": lambda i: "zfs list -H -o name poola/src",
        **every,
        "zfs snapshot": lambda i: f"zfs snapshot poola/snaps@s{i}",
        "zfs set": lambda i: f"zfs set zrep:lock-time={i} poola/src",
        "zfs hold": lambda i: f"zfs hold t{i} poola/src@zrep_000013",
        "zfs send | zfs recv (10 kB, full)": lambda i: (
            f"zfs send poola/small@s1 | zfs recv poolb/r{i}"
        ),
        "zfs send -v -P -i | zfs recv (engine's form, 4 kB incremental)": lambda i: (
            f"zfs send -v -P -i @c{i} poola/inc@c{i + 1} | zfs recv poolb/inc"
        ),
    }


def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(q * len(s)))]


def fmt(vals: list[float]) -> str:
    med = statistics.median(vals) * 1000
    return f"{med:.1f} ms ({pct(vals, 0.1) * 1000:.1f}-{pct(vals, 0.9) * 1000:.1f})"


def importtime(h: Host) -> float:
    """Total import time (ms) of one `zfs get -d 1`, by `python -X importtime`."""
    script = (
        "zfs get -H -p -d 1 -t filesystem,volume,snapshot -o name,property,value,source "
        f"{ENGINE_KEYS} poola/src"
    )
    env = dict(h.env, ZFS_STANDIN_PYTHON=f"{PY} -X importtime")
    # the wrapper runs "$py" quoted; a small shim passes -X importtime through
    shim = h.root.parent / f"py-importtime-{h.root.name}"
    shim.write_text(f'#!/bin/sh\nexec {PY} -X importtime "$@"\n')
    shim.chmod(0o755)
    env["ZFS_STANDIN_PYTHON"] = str(shim)
    best = None
    for _ in range(5):
        proc = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)
        total = 0
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m and m.group(3) == " ":  # top-level imports: their cumulative time
                total += int(m.group(2))
        best = total if best is None else min(best, total)
    return (best or 0) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--standin", type=Path, default=REPO / "tests" / "standin")
    ap.add_argument("--baseline", type=Path, help="another tests/standin directory")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--fill", type=int, default=0, help="N more filesystems on the host")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="standin-cpu-", dir="/dev/shm"))
    try:
        copies = {"this tree": args.standin.resolve()}
        if args.baseline:
            copies = {"baseline": args.baseline.resolve(), **copies}
        hosts = {k: Host(d, base / f"h{i}") for i, (k, d) in enumerate(copies.items())}
        for h in hosts.values():
            h.setup(args.fill, args.runs)
        bare = {k: [] for k in hosts}
        results: dict[str, dict[str, list[float]]] = {}
        for name in commands(next(iter(hosts.values())), args.fill):
            results[name] = {k: [] for k in hosts}
        for i in range(args.runs):
            for k, h in hosts.items():
                bare[k].append(h.run(f"{PY} -I -S -c pass"))
                for name, script in commands(h, args.fill).items():
                    results[name][k].append(h.run(script(i)))
        cols = list(hosts)
        size = (next(iter(hosts.values())).root / "state.json").stat().st_size
        print(f"CPU per call (user+sys, median of {args.runs}, 10th-90th percentile), "
              f"state.json {size // 1024} KB, load {os.getloadavg()[0]:.1f}")  # fmt: skip
        print("| command | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        print(f"| bare `{PY} -I -S -c pass` | " + " | ".join(fmt(bare[k]) for k in cols) + " |")
        for name, per in results.items():
            print(f"| `{name}` | " + " | ".join(fmt(per[k]) for k in cols) + " |")
        if args.importtime:
            print("| import time of `zfs get -d 1` (-X importtime, best of 5) | "
                  + " | ".join(f"{importtime(hosts[k]):.1f} ms" for k in cols) + " |")  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
