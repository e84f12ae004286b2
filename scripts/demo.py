"""The zrepq demo: real replication between two hosts through the queue.

Starts Redis, two storage hosts (each a stand-in ZFS state behind its own real sshd), a zrepq
worker per host and Flower (basic auth); then drives them with the `zrepq` CLI exactly as an
admin would. It leaves the stack running and prints Flower's URL; `scripts/demo.sh stop`
stops everything (`--stop-after` stops it at the end instead).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from tests.harness.redis_server import RedisServer  # noqa: E402
from tests.harness.services import start_flower, start_worker, worker_env  # noqa: E402
from tests.harness.sshd import SshdCluster  # noqa: E402
from tests.harness.standin import StandinHost, standin_env  # noqa: E402
from workers.auth.signing import generate  # noqa: E402
from workers.engine.liveness import read_stat  # noqa: E402

STATE = Path(os.environ.get("ZREPQ_DEMO_STATE", "/tmp/zrepq-demo.json"))


def stop_stack() -> int:
    """Stop a stack left running by an earlier demo (its process groups, by pid)."""
    if not STATE.exists():
        print("no demo stack is running")
        return 0
    state = json.loads(STATE.read_text())
    starts = {int(k): v for k, v in state.get("starts", {}).items()}
    # Only groups whose leader is still the process the demo started (same start time): the
    # stack may have died long ago and its pids been given to other processes since.
    ours = [pgid for pgid in state["pgids"] if _started_at(pgid) == starts.get(pgid, -1)]
    for pgid in ours:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    time.sleep(2)
    for pgid in ours:
        if _started_at(pgid) == starts[pgid]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    STATE.unlink()
    print(f"stopped {len(ours)} process groups; data left in {state['base']}")
    return 0


def _started_at(pid: int) -> int | None:
    """The start time (clock ticks after boot) of process `pid`, None if there is none."""
    stat = read_stat(pid)
    return None if stat is None or stat.exited else stat.start_ticks


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def make_keys(base: Path) -> dict[str, str]:
    """The demo's signing keys, as `zrepq keygen` makes them: `admin` for the CLI and Flower,
    one per worker (what it signs the other half of a failover with); every worker trusts
    all three. No policy file: the default lets every trusted identity run routine verbs."""
    keys, trusted = base / "keys", base / "keys" / "trusted"
    trusted.mkdir(parents=True)
    for name in ("admin", "hosta", "hostb"):
        _, pub = generate(name, keys)
        (trusted / pub.name).write_text(pub.read_text())
    return {"key": str(keys / "admin.key"), "trusted": str(trusted), "dir": str(keys)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stop", action="store_true", help="stop a stack left running")
    ap.add_argument("--stop-after", action="store_true", help="stop everything at the end")
    ap.add_argument("--size-mb", type=int, default=64, help="size of the demo data set")
    opts = ap.parse_args()
    if opts.stop:
        return stop_stack()
    if STATE.exists():
        stop_stack()  # one demo stack at a time
    if not opts.stop_after:
        os.environ["ZREPQ_HARNESS_DETACH"] = "1"  # the stack outlives this script
    base = Path(tempfile.mkdtemp(prefix="zrepq-demo-"))
    password = secrets.token_urlsafe(9)
    keep = False
    redis_srv = RedisServer(base / "redis")
    cluster = SshdCluster(base / "sshd")
    services = []
    try:
        step("starting Redis, sshd for hosta and hostb, a worker per host, Flower")
        redis_srv.start()
        keys = make_keys(base)
        # Producers (the CLI below, Flower) sign as `admin`; workers trust the keys dir.
        os.environ["ZREPQ_SIGNING_KEY"] = keys["key"]
        os.environ["ZREPQ_SIGNING_TRUSTED"] = keys["trusted"]
        os.environ.pop("ZREPQ_POLICY", None)
        print(f"signing keys (zrepq keygen): {keys['dir']}")
        hosts = {}
        for name in ("hosta", "hostb"):
            sshd = cluster.host(name)
            z = StandinHost(sshd.root, name)
            z.create_pool("pool" + name[-1])
            hosts[name] = z
            env = worker_env(
                name,
                redis_srv.url,
                standin_env(sshd.root),
                str(cluster.config_file),
                ZREP_INFILTER="pv -q -L 40m",
                ZREPQ_SIGNING_KEY=f"{keys['dir']}/{name}.key",
            )
            services.append(start_worker(name, env, base / "logs"))
        flower = start_flower(redis_srv.url, base / "logs", basic_auth=f"zrepq:{password}")
        services.append(flower)
        print(f"redis {redis_srv.url}; Flower http://127.0.0.1:{flower.port}/ ; logs {base}")

        env = {**os.environ, "ZREPQ_BROKER_URL": redis_srv.url, "PYTHONPATH": str(REPO)}

        def zrepq(*args: str) -> None:
            print(f"$ zrepq {' '.join(args)}", flush=True)
            subprocess.run([sys.executable, "-m", "producer.cli", *args], env=env, check=True)

        a, b = hosts["hosta"], hosts["hostb"]
        step("data on hosta:poola/projects")
        a.zfs("create", "poola/projects")
        a.write("poola/projects", "readme.txt", b"zrepq demo\n")
        a.write("poola/projects", "data.bin", os.urandom(opts.size_mb << 20))
        for leaf in ("home", "db"):
            a.zfs("create", f"poola/{leaf}")
            a.write(f"poola/{leaf}", "file.txt", f"{leaf} data\n".encode())

        step("init: full send hosta -> hostb (zrep -i), progress from the worker")
        zrepq("-H", "hosta", "init", "--wait", "poola/projects", "hostb", "poolb/projects")
        for leaf in ("home", "db"):
            zrepq("-H", "hosta", "init", "--wait", f"poola/{leaf}", "hostb", f"poolb/{leaf}")

        step("change data, then sync (zrep -S)")
        a.write("poola/projects", "data.bin", os.urandom(opts.size_mb << 19))
        zrepq("-S", "hosta:poola/projects", "--wait")

        step("sync all: every master fs of every host, one summary")
        a.write("poola/home", "file.txt", b"home data v2\n")
        zrepq("sync", "all", "--wait")

        step("status in zrep's own format")
        zrepq("-H", "hosta", "status", "-v")

        step("check: the bytes on hostb are the bytes on hosta")
        for name in ("readme.txt", "data.bin"):
            ha = hashlib.sha256(a.read("poola/projects", name)).hexdigest()
            hb = hashlib.sha256(b.read("poolb/projects", name)).hexdigest()
            print(f"{name}: {ha[:16]} {'==' if ha == hb else '!='} {hb[:16]}")
            if ha != hb:
                return 1

        step("failover to hostb, write there, take over back on hosta")
        zrepq("-H", "hosta", "failover", "--wait", "poola/projects")
        b.write("poolb/projects", "from-b.txt", b"written on hostb while it was master\n")
        zrepq("-H", "hostb", "sync", "--wait", "poolb/projects")
        zrepq("-H", "hosta", "takeover", "--wait", "poola/projects")
        print("hosta has:", a.read("poola/projects", "from-b.txt").decode().strip())
        zrepq("-H", "hosta", "status")

        step("done")
        if not opts.stop_after:
            pgids = [svc.pid for svc in services] + [h.pid for h in cluster.hosts.values()]
            pgids.append(redis_srv.pid or 0)
            pgids = [p for p in pgids if p]
            starts = {p: _started_at(p) for p in pgids}
            STATE.write_text(json.dumps({"pgids": pgids, "starts": starts, "base": str(base)}))
            keep = True
            print(
                f"The stack keeps running. Flower: http://127.0.0.1:{flower.port}/ "
                f"(user zrepq, password {password}); Redis: {redis_srv.url}"
            )
            print(
                f"Try: ZREPQ_BROKER_URL={redis_srv.url} ZREPQ_SIGNING_KEY={keys['key']} "
                ".venv/bin/zrepq -H hosta status -v"
            )
            print("Stop everything: bash scripts/demo.sh stop")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if not keep:
            for svc in services:
                svc.stop()
            cluster.stop_all()
            redis_srv.stop()


if __name__ == "__main__":
    sys.exit(main())
