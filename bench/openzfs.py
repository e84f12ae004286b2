"""5. Sync all on real OpenZFS: two QEMU guests as two storage hosts, zrepq and the peers.

    python -m bench.openzfs [--quick|--smoke]      (ZREPQ_BENCH_ZFS=2.1 for the older line)

On the stand-in a zfs call costs its 30 ms of sleep plus a Python start, whatever it does.
On a real pool a read is cheap and every write (snapshot, set, hold, release, destroy) waits
for a transaction group to be synced: this section measures what one of each costs there,
and the sync-all of section 2 at a small N, where those waits count.

Two guests from tests/realzfs (the cached image of OpenZFS 2.3, built on first use like the
realzfs tier does; TCG emulation, 2 vCPUs each): `zfsvm1` (pool `src`) and `zfsvm2` (pool
`dst`) on their private link, as tests/realzfs/e2e.py sets them up. zrepq is installed in
both from this checkout (a worker each, concurrency 4, against Redis on this machine);
syncoid (Debian's .debs, installed offline) and zfs-autobackup (PyPI wheels, offline) in
zfsvm1, which pushes to zfsvm2 over ssh. Each contender has its own N datasets
`src/FAMILY/dNN` -> `dst/FAMILY/dNN`, set up by its own first run, and keeps one snapshot per
side (zrepq savecount 1), so every timed sync expires one old snapshot on each side.

Timed: zrepq's `zrepq --wait sync --host zfsvm1 all` from this machine (the producer's
place: the control plane is not on a storage host) with the workers running; the others
inside zfsvm1, by the guest's clock: `zrepq-local sync all`, syncoid per dataset and
`--recursive`, zfs-autobackup (holds, guid checks) and its fastest documented run. Settings
as in bench/peers.py. zfs call counts are those of section 2 (same tools, same calls); here
only time is measured.
"""

from __future__ import annotations

import concurrent.futures
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import peers
from bench.common import Lab, Section, fmt_ms, fmt_s, median, missing_tools, section_main

PARAMS = {
    "full": {"n": 10, "writes": 10},
    "quick": {"n": 4, "writes": 5},
    "smoke": {"n": 2, "writes": 3},
}
FAMILIES = ("zq", "so", "zab", "zabf")
ZAB_NAMES = {"zab": "bench", "zabf": "benchf"}


def label() -> str:
    return os.environ.get("ZREPQ_BENCH_ZFS", "2.3")


def why_not() -> str | None:
    from tests.realzfs.image import missing_host_packages

    if os.geteuid() != 0:
        return "real OpenZFS guests need root"
    missing = [p for p in missing_host_packages() if p.startswith("qemu")]
    if missing and os.environ.get("ZREPQ_BENCH_NO_INSTALL"):
        return f"qemu not installed ({', '.join(missing)})"
    return missing_tools("redis")


def peer_files(dest: Path) -> tuple[Path, Path]:
    """Debian's sanoid .debs (apt-get download) and zfs-autobackup's wheels (pip download by
    the guest's Python version on this machine), for an offline install in the guest."""
    from tests.realzfs.e2e import HOST_PYTHON

    debs, wheels = dest / "debs", dest / "wheels"
    debs.mkdir(parents=True)
    wheels.mkdir(parents=True)
    res = subprocess.run(["apt-get", "download", *peers.SANOID_DEBS], cwd=debs,
                         capture_output=True, text=True, check=False)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"apt-get download of sanoid's packages failed:\n{res.stderr}")
    res = subprocess.run(
        [HOST_PYTHON, "-m", "pip", "download", "-q", "--dest", str(wheels), "--only-binary=:all:",
         f"zfs-autobackup=={peers.ZAB_VERSION}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"pip download of zfs-autobackup failed:\n{res.stderr}")
    return debs, wheels


def install_peers(host: Any, debs: Path, wheels: Path) -> None:
    host.guest.put(debs, "/root/peers")
    host.guest.put(wheels, "/root/peers")
    host.sh(
        "set -e; dpkg -i /root/peers/debs/*.deb >/var/tmp/peers-install.log 2>&1; "
        "python3 -m venv /opt/zab; /opt/zab/bin/pip install -q --no-compile --no-index "
        f"--find-links /root/peers/wheels zfs-autobackup=={peers.ZAB_VERSION}",
        timeout=900,
    )


def timed(host: Any, script: str, timeout: float = 3600) -> float:
    """Run `script` in the guest; its wall time by the guest's clock (no ssh in it)."""
    wrapped = (
        "t0=$(date +%s%N); ( " + script + " ) >/var/tmp/bench-run.log 2>&1; rc=$?; "
        't1=$(date +%s%N); echo "$rc $(( (t1 - t0) / 1000 ))"'
    )
    out = host.sh(wrapped, timeout=timeout).split()
    rc, usec = int(out[0]), int(out[1])
    if rc != 0:
        log = host.sh("tail -n 60 /var/tmp/bench-run.log")
        raise RuntimeError(f"{host.name}: {script[:200]!r} exited {rc}:\n{log}")
    return usec / 1e6


def write_costs(host: Any, n: int) -> dict[str, float]:
    """Median seconds of one `zfs set`, `snapshot`, `hold`, `release`, `destroy` (each waits
    for a txg) and of one `zfs get` (a read), timed in the guest."""
    fs = f"{host.pool}/w"
    host.zfs("create", fs)
    script = f"""
set -e
t() {{ a=$(date +%s%N); "$@" >/dev/null; b=$(date +%s%N); echo "$1 $2 $(( (b - a) / 1000 ))"; }}
for i in $(seq 1 {n}); do
  t zfs set bench:x=$i {fs}
  t zfs get -H -o value guid {fs}
  t zfs snapshot {fs}@w$i
  t zfs hold bench {fs}@w$i
  t zfs release bench {fs}@w$i
  t zfs destroy {fs}@w$i
done
"""
    samples: dict[str, list[float]] = {}
    for line in host.sh(script, timeout=1800).splitlines():
        _prog, sub, usec = line.split()
        samples.setdefault(sub, []).append(int(usec) / 1e6)
    return {k: median(v) for k, v in samples.items()}


def newest(host: Any, parent: str) -> dict[str, tuple[str, str, int]]:
    out = host.sh(f"zfs list -H -p -o name,guid -t snapshot -s createtxg -r {parent}")
    res: dict[str, tuple[str, str, int]] = {}
    for line in out.splitlines():
        name, guid = line.split("\t")
        fs, _, snap = name.partition("@")
        res[fs] = (snap, guid, res[fs][2] + 1 if fs in res else 1)
    return res


def check(a: Any, b: Any, fam: str, n: int, before: Any = None) -> Any:
    sa, sb = newest(a, f"src/{fam}"), newest(b, f"dst/{fam}")
    if len(sa) != n:
        raise RuntimeError(f"{fam}: {len(sa)} source datasets with snapshots, expected {n}")
    for fs, (snap, guid, _) in sa.items():
        dst = "dst" + fs[len("src") :]
        if sb.get(dst, ("", "", 0))[:2] != (snap, guid):
            raise RuntimeError(f"{fam}: {dst} has {sb.get(dst)}, source {fs} {(snap, guid)}")
    counts = ({k: v[2] for k, v in sa.items()}, {k: v[2] for k, v in sb.items()})
    if before is not None and counts != before:
        raise RuntimeError(f"{fam}: snapshot counts changed: {before} -> {counts}")
    return counts


def run(mode: str) -> Section:
    sec = Section("5")
    why = why_not()
    if why:
        sec.skipped = why
        return sec
    p = PARAMS[mode]
    n = p["n"]
    from producer.api import Producer
    from tasks.app import make_app
    from tests.harness.signing import signed
    from tests.realzfs.e2e import (
        StorageHost,
        boot_pair,
        install_zrepq,
        start_worker,
        wait_registered,
        wheelhouse,
    )
    from tests.realzfs.image import ensure_image

    image = ensure_image(label())
    walls: dict[str, float] = {}
    with Lab("openzfs") as lab:
        t_boot = time.monotonic()
        guests = boot_pair(image)
        for g in guests:
            lab.callback(g.stop)
        a, b = (
            StorageHost(g, g.name, pool) for g, pool in zip(guests, ("src", "dst"), strict=True)
        )
        version = a.sh("zfs version | head -1").strip()
        boot_s = time.monotonic() - t_boot
        print(f"[5] guests up in {fmt_s(boot_s)}: {version}", flush=True)
        t_inst = time.monotonic()
        pyver = a.sh("python3 -c 'import platform; print(platform.python_version())'").strip()
        wheels = wheelhouse(pyver)
        debs, zab_wheels = peer_files(lab.base / "peers")
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            jobs = [ex.submit(install_zrepq, g, wheels) for g in guests]
            jobs.append(ex.submit(install_peers, a, debs, zab_wheels))
            for j in jobs:
                j.result()
        for s in (a, b):
            s.sh(f"truncate -s 2G /var/tmp/vdev-{s.pool} && zpool create -f {s.pool} "
                 f"/var/tmp/vdev-{s.pool}")  # fmt: skip
        print(f"[5] zrepq and the peers installed in {fmt_s(time.monotonic() - t_inst)}",
              flush=True)  # fmt: skip
        # datasets: src/FAMILY/dNN with a file each; the targets' parents
        setup = ["set -e"]
        for fam in FAMILIES:
            props = f"-o autobackup:{ZAB_NAMES[fam]}=child " if fam in ZAB_NAMES else ""
            setup.append(f"zfs create {props}src/{fam}")
            for i in range(n):
                setup.append(f"zfs create src/{fam}/d{i:02d}")
                setup.append(f"echo {fam}{i} > /src/{fam}/d{i:02d}/f.txt")
        a.sh("\n".join(setup), timeout=1800)
        b.sh("; ".join(f"zfs create dst/{fam}" for fam in FAMILIES))
        # zrepq: workers on both guests, one init per dataset (savecount 1)
        redis = lab.redis()
        client = redis.client(socket_timeout=5)
        for s in (a, b):
            start_worker(s, redis.port, ZREPQ_CONCURRENCY="4", ZREP_SAVE_COUNT="1")
        wait_registered(client, [a, b])
        producer = Producer(app=make_app(signed({"ZREPQ_BROKER_URL": redis.url})))
        from producer.watch import wait

        inits = {
            f"d{i:02d}": producer.init(f"src/zq/d{i:02d}", b.name, f"dst/zq/d{i:02d}", host=a.name)
            for i in range(n)
        }
        for key, rec in wait(inits, timeout=3600, show=False).items():
            if not rec.get("ok"):
                raise RuntimeError(f"zrepq init of {key}: {rec}\n{a.worker_log()}")
        # the peers' first runs
        cfg = "/root/zab_ssh_config"
        a.sh(
            f"printf 'Host *\\n    StrictHostKeyChecking accept-new\\n    ControlPath "
            f"/root/.cm-%%C\\n    ControlMaster auto\\n    ControlPersist 3600\\n' > {cfg}"
        )

        def syncoid(src: str, dst: str, *extra: str) -> str:
            argv = ["syncoid", *peers.SYNCOID_OPTIONS, *extra, src, f"root@{b.name}:{dst}"]
            return shlex.join(argv)

        def zab(fam: str, *extra: str) -> str:
            argv = peers.zab_argv(
                cfg,
                b.name,
                f"dst/{fam}",
                *extra,
                name=ZAB_NAMES[fam],
                exe="/opt/zab/bin/zfs-autobackup",
            )
            return (
                shlex.join(argv) + f"; rc=$?; ssh -F {cfg} -O exit {b.name} 2>/dev/null; exit $rc"
            )

        so_all = syncoid("src/so", "dst/so", "--recursive", "--skip-parent")
        timed(a, so_all)
        timed(a, zab("zab"))
        timed(a, zab("zabf", *peers.ZAB_FASTEST))
        for fam in FAMILIES:
            check(a, b, fam, n)
        print(f"[5] {n} datasets per contender set up", flush=True)
        costs = write_costs(a, p["writes"])
        calls = ", ".join(f"zfs {k} {fmt_ms(v)}" for k, v in costs.items())
        print(f"[5] one call in the guest: {calls}", flush=True)

        cli = [str(Path(sys.executable).parent / "zrepq"), "--wait", "sync", "--host", a.name,
               "all"]  # fmt: skip
        cli_env = signed({**os.environ, "ZREPQ_BROKER_URL": redis.url, "ZREPQ_CONFIG": "none"})

        def queued() -> float:
            t0 = time.perf_counter()
            res = subprocess.run(cli, env=cli_env, capture_output=True, text=True, timeout=3600)
            wall = time.perf_counter() - t0
            if res.returncode != 0 or f"{a.name}: {n} synced;" not in res.stdout:
                raise RuntimeError(f"zrepq sync all: {res.stdout[-2000:]}\n{res.stderr[-2000:]}"
                                   f"\n{a.worker_log()}")  # fmt: skip
            return wall

        loop = "; ".join(syncoid(f"src/so/d{i:02d}", f"dst/so/d{i:02d}") for i in range(n))
        local = (
            f"ZREPQ_HOST={a.name} ZREPQ_SSH_ACCEPT_NEW=1 ZREPQ_CONFIG=none "
            "/opt/zrepq/bin/zrepq-local sync all"
        )
        plan = [
            ("queue", "zq", queued),
            ("syncoid-each", "so", lambda: timed(a, "set -e; " + loop)),
            ("zab", "zab", lambda: timed(a, zab("zab"))),
            ("local", "zq", lambda: timed(a, local)),
            ("syncoid-r", "so", lambda: timed(a, so_all)),
            ("zabf", "zabf", lambda: timed(a, zab("zabf", *peers.ZAB_FASTEST))),
        ]
        for key, fam, step in plan:
            before = check(a, b, fam, n)
            time.sleep(1.05 - time.time() % 1.0)  # peers name snapshots by the second
            print(f"[5] {key}", flush=True)
            walls[key] = step()
            check(a, b, fam, n, before)
            print(f"  {key}: {fmt_s(walls[key])} ({walls[key] / n:.2f} s per dataset)", flush=True)
    report(sec, walls, costs, n, version, boot_s)
    return sec


LABELS = {
    "queue": "zrepq sync all --wait (CLI on this machine, workers in the guests, c=4)",
    "local": "zrepq-local sync all (in zfsvm1)",
    "syncoid-each": "syncoid, one run per dataset",
    "syncoid-r": "syncoid --recursive --skip-parent",
    "zab": "zfs-autobackup (holds, guid checks)",
    "zabf": "zfs-autobackup, fastest documented (--no-holds --no-guid-check)",
}


def report(
    sec: Section, walls: dict[str, float], costs: dict[str, float], n: int, version: str,
    boot_s: float,
) -> None:  # fmt: skip
    where = f"real OpenZFS ({version}) in two QEMU guests (TCG)"
    writes = [k for k in ("set", "snapshot", "hold", "release", "destroy") if k in costs]
    write, read = median([costs[k] for k in writes]), costs.get("get", float("nan"))
    sec.row(
        f"{where}: what one zfs call costs there (median, timed in the guest): writes, each "
        "waiting for its transaction group, vs a read",
        ", ".join(f"{k} {fmt_ms(costs[k])}" for k in writes),
        f"a read (`zfs get`): {fmt_ms(read)}",
        f"a write {fmt_ms(write)}, {fmt_ms(write - read)} more than a read (the rest is the "
        "zfs process under emulation)",
        "",
        None,
    )
    main = walls["queue"] / n
    for key in ("local", "syncoid-each", "syncoid-r", "zab", "zabf"):
        per = walls[key] / n
        sec.row(
            f"{where}: sync all, {n} unchanged datasets, one snapshot expired per side: zrepq "
            f"queue vs {LABELS[key]}",
            f"{main:.2f} s per dataset ({fmt_s(walls['queue'])})",
            f"{per:.2f} s per dataset ({fmt_s(walls[key])})",
            f"zrepq {per / main:.2f}x as fast"
            if per >= main
            else f"zrepq {per / main:.2f}x: slower",
            "zrepq ahead" if key != "local" else "",
            per > main if key != "local" else None,
        )
    sec.table(
        f"Sync all on {where}: {n} unchanged datasets per contender, same run",
        ["contender", "wall", "per dataset", "vs zrepq's queue"],
        [
            [LABELS[k], fmt_s(w), f"{w / n:.2f} s", f"{w / walls['queue']:.2f}x"]
            for k, w in walls.items()
        ],
    )
    sec.note(
        f"real OpenZFS: two guests booted in {fmt_s(boot_s)}; one call in zfsvm1: "
        + ", ".join(f"zfs {k} {fmt_ms(v)}" for k, v in costs.items())
    )


if __name__ == "__main__":
    sys.exit(section_main(run))
