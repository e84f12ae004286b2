"""The shipped systemd units under a real systemd, installed as docs/install.md says.

Two Debian 12 containers boot with systemd as PID 1 (image: tests/deploy/systemd-host.Dockerfile
on the debootstrap base): `ctl` gets Redis from Debian's package and the control-plane units
(scheduler, exporter, Flower; secrets in /etc/default/zrepq), `store` is a storage host
(worker unit and its check timer, sshd, the stand-in zfs on root's PATH) that replicates
poola/data to its own poolb/data over ssh. Every step is a block of install.md, run as
written in a copy of the checkout (`/root/zrepq`, with the wheelhouse), except the edits the
doc asks for ([broker] url, [ssh] identity) and the partner's authorized_keys line.

The containers run with /sys/fs/cgroup read-only and tmpfs on /run, /run/lock and /tmp, and
CAP_SYS_ADMIN and CAP_SYS_PTRACE added; not --privileged, which these machines refuse.
Without CAP_SYS_ADMIN systemd silently skips the units' mount namespaces (ProtectSystem=,
PrivateTmp=): the control units' hardening would not be in force, hence not tested.
SYS_PTRACE lets the test look at the namespaces of processes that run as `zrepq`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.deploy.conftest import FIGURES, SYSTEMD_IMAGE, Background, host_env
from tests.deploy.docker_host import Container, Docker, run
from tests.deploy.install_doc import block
from tests.harness.netutil import free_port, wait_until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1500)]

NETWORK = "zrepq-deploy-systemd"
REDIS_PASSWORD = "redis-pw-" + os.urandom(6).hex()
FLOWER_AUTH = "admin:flower-pw-" + os.urandom(6).hex()
SRC = "/root/zrepq"  # the admin's copy of the checkout on each machine
STANDIN = "/var/lib/zfs-standin/mnt"  # where the stand-in keeps a dataset's files
STREAM_RATE = 3_000_000  # bytes/s through the worker's `pv -L` (ZREP_INFILTER)


@dataclass
class Fleet:
    docker: Docker
    ctl: Container
    store: Container
    redis_port: int

    def doc(self, host: Container, name: str, subs: dict[str, str] | None = None) -> str:
        """Run install.md's block `name` on `host`, in its checkout copy, as root."""
        res = host.sh(
            block(name, subs), workdir=SRC, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600
        )
        return res.stdout

    @property
    def producer_env(self) -> dict[str, str]:
        return host_env(
            ZREPQ_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            ZREPQ_REDIS_PASSWORD=REDIS_PASSWORD,
            ZREPQ_SIGNING_KEY=self.ops_key(),
            ZREPQ_SIGNING_IDENTITY="ops",  # the copy's file name is not the identity
        )

    def ops_key(self) -> str:
        """The control plane's key (install.md makes it on ctl), for the CLI of the tests."""
        path = Path(tempfile.gettempdir()) / f"zrepq-deploy-ops-{os.getpid()}.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.ctl.read("/etc/zrepq/keys/ops.key"))
        return str(path)

    def zrepq(self, *args: str, timeout: float = 180) -> str:
        return run(["zrepq", *args], env=self.producer_env, timeout=timeout).stdout

    def send(self, *args: str) -> str:
        return str(json.loads(self.zrepq("--json", *args).splitlines()[0])["task_id"])

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, password=REDIS_PASSWORD, socket_timeout=10)

    def task(self, task_id: str) -> dict[str, Any]:
        raw = self.redis().get(f"celery-task-meta-{task_id}")
        return json.loads(raw) if raw else {}

    def leases(self) -> list[str]:
        return sorted(k.decode() for k in self.redis().scan_iter("zrepq:lock:*"))

    def worker_ready_since(self, since: str) -> bool:
        log = self.store.sh(f"journalctl -u zrepq-worker --since '{since}' --no-pager").stdout
        return "zrepq@store ready." in log


def now(host: Container) -> str:
    return host.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()


def boot(docker: Docker, name: str, hostname: str, *extra: str) -> Container:
    docker(
        "run", "-d", "--name", name, "--hostname", hostname, "--network", NETWORK,
        "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
        *extra, SYSTEMD_IMAGE,
    )  # fmt: skip
    return Container(docker, name)


def set_toml_key(text: str, table: str, key: str, value: str) -> str:
    """Set `key` in `[table]` as an admin edits the file: the line, commented out or not."""
    head = re.search(rf"^\[{re.escape(table)}\]\n", text, re.M)
    assert head, f"no [{table}] in zrepq.toml"
    end = re.search(r"^\[", text[head.end() :], re.M)
    stop = head.end() + (end.start() if end else len(text) - head.end())
    section = text[head.end() : stop]
    line = re.compile(rf"^#?\s*{re.escape(key)}\s*=.*$", re.M)
    assert line.search(section), f"zrepq.toml has no {key} in [{table}]"
    section = line.sub(f"{key} = {json.dumps(value)}", section, count=1)
    new = text[: head.end()] + section + text[stop:]
    assert tomllib.loads(new)[table][key] == value
    return new


@pytest.fixture(scope="module")
def fleet(
    docker: Docker, checkout: Path, systemd_image_build: Background, artifacts: Path
) -> Iterator[Fleet]:
    t0 = time.monotonic()
    took = systemd_image_build.wait(900)
    FIGURES["systemd host image build (s), in the background"] = round(took, 1)
    FIGURES["systemd host image: waited for it (s)"] = round(time.monotonic() - t0, 1)
    img = docker.image(SYSTEMD_IMAGE)
    assert img is not None
    FIGURES[f"image {SYSTEMD_IMAGE}"] = f"{img['Size'] / 1e6:.0f} MB"
    docker("network", "create", NETWORK)
    port = free_port()
    names = ("zrepq-deploy-ctl", "zrepq-deploy-store")
    try:
        t0 = time.monotonic()
        ctl = boot(docker, names[0], "ctl", "-p", f"127.0.0.1:{port}:6379")
        store = boot(docker, names[1], "store")
        for host in (ctl, store):

            def up(h: Container = host) -> bool:
                state = h.sh("systemctl is-system-running || true").stdout.strip()
                assert state not in ("degraded", "maintenance"), h.sh(
                    "systemctl --failed --no-pager; journalctl -b --no-pager | tail -40"
                ).stdout
                return state == "running"

            assert wait_until(up, 60, 0.3), f"{host.name}: systemd did not reach `running`"
        FIGURES["systemd: both containers `running` after (s)"] = round(time.monotonic() - t0, 1)
        for host in (ctl, store):
            host.sh(f"mkdir -p {SRC}/docker")
            docker("cp", str(checkout / "deploy"), f"{host.name}:{SRC}/deploy")
            docker("cp", str(checkout / "docker" / "wheelhouse"), f"{host.name}:{SRC}/docker/")
        f = Fleet(docker, ctl, store, port)
        install(f)
        yield f
    finally:
        for name in names:
            res = docker("exec", name, "journalctl", "-b", "--no-pager", check=False)
            (artifacts / f"journal-{name}.log").write_text(res.stdout + res.stderr)
        docker("rm", "-f", *names, check=False)
        docker("network", "rm", NETWORK, check=False)


def install(f: Fleet) -> None:
    """docs/install.md on both machines at once: Redis and the control plane on ctl; the
    package, ssh and configuration on store; then store's units, which need Redis."""
    with ThreadPoolExecutor(2) as pool:
        ctl = pool.submit(install_ctl, f)
        store = pool.submit(install_store, f)
        ctl.result()
        store.result()
    s = f.store
    ops_pub = f.ctl.read("/etc/zrepq/keys/ops.pub").strip()
    f.doc(s, "trust-producer", {"zrepq-ed25519 THE-OPS-PUBLIC-KEY ops": ops_pub})
    since = now(s)
    f.doc(s, "worker-units")
    assert wait_until(lambda: f.worker_ready_since(since), 60, 0.5), s.sh(
        "journalctl -u zrepq-worker --no-pager | tail -30"
    ).stdout
    assert "ok: zrepq@store consumes zrepq.host.store" in f.doc(s, "worker-check")


def install_ctl(f: Fleet) -> None:
    t0 = time.monotonic()
    f.doc(f.ctl, "redis-server", {"the-redis-password": REDIS_PASSWORD})
    f.doc(
        f.ctl,
        "control-plane",
        {
            "redis.example.net": "127.0.0.1",
            "the-redis-password": REDIS_PASSWORD,
            "admin:a-long-password": FLOWER_AUTH,
        },
    )
    FIGURES["systemd: ctl installed as documented (s)"] = round(time.monotonic() - t0, 1)


def install_store(f: Fleet) -> None:
    t0 = time.monotonic()
    s = f.store
    f.doc(s, "storage-host", {"the-redis-password": REDIS_PASSWORD})
    pub = f.doc(s, "ssh-key").strip().splitlines()[-1]
    assert pub.startswith("ssh-ed25519 ") and pub.endswith("zrepq@store"), pub
    s.sh("cat >> /root/.ssh/authorized_keys", input=pub + "\n")  # the partner is store itself
    out = f.doc(s, "ssh-partner", {"partner": "store"})
    theirs = s.sh("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    assert theirs in out and "poola" in out and "poolb" in out, out
    toml = s.read("/etc/zrepq/zrepq.toml")
    toml = set_toml_key(toml, "broker", "url", "redis://ctl:6379/0")
    toml = set_toml_key(toml, "ssh", "identity", "/root/.ssh/id_zrepq")
    s.write("/etc/zrepq/zrepq.toml", toml)
    assert "configuration OK" in f.doc(s, "config-check")
    # For the tests only: a sync slow enough to stop in the middle, and a quicker failed check.
    s.write(
        "/etc/default/zrepq",
        f"ZREP_INFILTER=pv -q -L {STREAM_RATE}\nZREPQ_CHECK_TIMEOUT=10\n",
    )
    FIGURES["systemd: store installed as documented (s)"] = round(time.monotonic() - t0, 1)


def test_units_run_under_systemd_as_installed(fleet: Fleet) -> None:
    ctl_units = ["redis-server", "zrepq-scheduler", "zrepq-metrics", "zrepq-flower"]
    for unit in ctl_units:
        assert fleet.ctl.unit(unit, "ActiveState", "UnitFileState") == {
            "ActiveState": "active",
            "UnitFileState": "enabled",
        }, unit
    assert fleet.store.unit("zrepq-worker", "ActiveState")["ActiveState"] == "active"
    assert fleet.store.unit("zrepq-worker-check.timer", "ActiveState")["ActiveState"] == "active"
    for host in (fleet.ctl, fleet.store):
        assert host.sh("systemctl is-system-running").stdout.strip() == "running"
    # The CLI on the control plane, with the settings of /etc/default/zrepq.
    out = fleet.doc(fleet.ctl, "control-plane-cli")
    assert re.search(r"store\s+up", out), out


def _sync_and_compare(fleet: Fleet, name: str, size: int) -> str:
    """New content on poola/data, a sync through store's queue, the same bytes on poolb."""
    data = os.urandom(size).hex()
    fleet.store.sh(f"cat > {STANDIN}/poola/data/{name}", input=data)
    out = fleet.zrepq("-S", "store:poola/data", "--wait")
    there = fleet.store.sh(f"sha256sum {STANDIN}/poolb/data/{name}").stdout.split()[0]
    assert there == hashlib.sha256(data.encode()).hexdigest(), name
    return out


def test_worker_consumes_its_hosts_queue(fleet: Fleet) -> None:
    fleet.store.sh(f"zfs create poola/data && echo hello > {STANDIN}/poola/data/hello.txt")
    out = fleet.zrepq("-H", "store", "init", "--wait", "poola/data", "store", "poolb/data")
    assert "initialized poola/data@zrep_000000 -> store:poolb/data" in out, out
    out = _sync_and_compare(fleet, "first", 500_000)
    assert "synced poola/data@zrep_000001" in out, out
    snaps = fleet.store.sh("zfs list -H -t snapshot -o name -r poolb").stdout.split()
    assert snaps == ["poolb/data@zrep_000000", "poolb/data@zrep_000001"]


def _ns(host: Container, pid: int) -> str:
    return host.sh(f"readlink /proc/{pid}/ns/mnt").stdout.strip()


def test_hardening_leaves_zfs_and_ssh_working(fleet: Fleet) -> None:
    s = fleet.store
    pid = s.main_pid("zrepq-worker")
    status = s.read(f"/proc/{pid}/status")
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    # No private mount namespace: what `zfs recv` mounts is mounted for the whole host.
    assert _ns(s, pid) == _ns(s, 1)
    assert "synced" in _sync_and_compare(fleet, "hardened", 200_000)  # zfs send | ssh zfs recv
    # The control units do get their sandbox: own mount namespace, / read-only inside it,
    # no new privileges, the zrepq user; Flower writes its history where it may.
    c = fleet.ctl
    for unit in ("zrepq-scheduler", "zrepq-metrics", "zrepq-flower"):
        upid = c.main_pid(unit)
        assert c.sh(f"ps -o user= -p {upid}").stdout.strip() == "zrepq", unit
        assert re.search(r"^NoNewPrivs:\s+1$", c.read(f"/proc/{upid}/status"), re.M), unit
        assert _ns(c, upid) != _ns(c, 1), unit
        res = c.sh(f"nsenter -t {upid} -m touch /usr/zrepq-probe", check=False)
        assert res.returncode != 0 and "Read-only file system" in res.stderr, (unit, res)
    assert c.sh("ls /var/lib/zrepq").stdout.count("flower.db") >= 1


def test_control_plane_takes_its_secrets_from_the_environment_file(fleet: Fleet) -> None:
    c = fleet.ctl
    assert c.sh("stat -c '%a %U' /etc/default/zrepq").stdout.split() == ["600", "root"]
    for unit in ("zrepq-scheduler", "zrepq-metrics", "zrepq-flower"):
        assert "/etc/default/zrepq" in c.unit(unit, "EnvironmentFiles")["EnvironmentFiles"]
    probe = (
        "import base64, sys, urllib.error, urllib.request as u\n"
        "r = u.Request('http://127.0.0.1:5555/api/workers')\n"
        "if len(sys.argv) > 1:\n"
        "    cred = base64.b64encode(sys.argv[1].encode()).decode()\n"
        "    r.add_header('Authorization', 'Basic ' + cred)\n"
        "try:\n    print(u.urlopen(r, timeout=10).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    c.write("/tmp/probe.py", probe)
    assert c.sh("python3 /tmp/probe.py").stdout.strip() == "401"
    assert c.sh(f"python3 /tmp/probe.py '{FLOWER_AUTH}'").stdout.strip() == "200"
    scrape = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9478/metrics').read().decode())"
    metrics = c.sh(f'python3 -c "{scrape}"').stdout
    assert "zrepq_exporter_redis_up 1.0" in metrics
    assert "beat: Acquired lock" in c.sh("journalctl -u zrepq-scheduler --no-pager").stdout
    # The scheduler, reading Redis with the password from the file, fires a schedule.
    fleet.zrepq("schedule", "add", "sd-every-5s", "sync", "store:poola/data", "--every", "5s")
    try:

        def fired() -> bool:
            for entry in json.loads(fleet.zrepq("--json", "schedule", "list")):
                if entry["name"] == "sd-every-5s":
                    return int(entry["total_run_count"]) >= 1
            return False

        t0 = time.monotonic()
        assert wait_until(fired, 60, 1), c.sh(
            "journalctl -u zrepq-scheduler --no-pager | tail"
        ).stdout
        FIGURES["systemd: 5 s schedule first fired after (s)"] = round(time.monotonic() - t0, 1)
    finally:
        fleet.zrepq("schedule", "remove", "sd-every-5s")


def test_check_timer_restarts_a_wedged_worker(fleet: Fleet) -> None:
    s = fleet.store
    # The timer's interval, 2 min as shipped, shortened for the test by a drop-in.
    dropin = "/etc/systemd/system/zrepq-worker-check.timer.d"
    s.sh(
        f"mkdir -p {dropin} && printf '[Timer]\\nOnBootSec=10s\\nOnUnitInactiveSec=10s\\n"
        f"AccuracySec=1s\\n' > {dropin}/test.conf && systemctl daemon-reload "
        "&& systemctl restart zrepq-worker-check.timer"
    )
    try:
        old = s.main_pid("zrepq-worker")
        since = now(s)
        s.sh(f"kill -STOP {old}")  # the worker's main process: alive, answering nothing
        t0 = time.monotonic()

        def replaced() -> bool:
            pid = s.main_pid("zrepq-worker")
            return pid not in (0, old) and fleet.worker_ready_since(since)

        assert wait_until(replaced, 120, 0.5), s.sh(
            "journalctl -u zrepq-worker-check -u zrepq-worker-restart --no-pager | tail -20"
        ).stdout
        FIGURES["systemd: SIGSTOPped worker replaced after (s), timer every 10 s"] = round(
            time.monotonic() - t0, 1
        )
        log = s.sh(f"journalctl -u zrepq-worker-check --since '{since}' --no-pager").stdout
        assert "zrepq-worker --check: FAILED" in log and "did not answer a ping" in log, log
        assert "status=69" in log
        assert "synced" in _sync_and_compare(fleet, "after-restart", 100_000)
    finally:
        s.sh(f"rm -rf {dropin} && systemctl daemon-reload")
        s.sh("systemctl restart zrepq-worker-check.timer")


def test_stop_is_a_warm_shutdown_that_releases_the_lease(fleet: Fleet) -> None:
    s = fleet.store
    size = 4 * STREAM_RATE  # ~4 s through pv -L
    s.sh(f"head -c {size} /dev/urandom > {STANDIN}/poola/data/big.bin")
    task_id = fleet.send("-S", "store:poola/data")
    assert wait_until(lambda: fleet.task(task_id).get("status") == "PROGRESS", 30, 0.1)
    held = fleet.leases()
    assert "zrepq:lock:store:zrep:poola/data" in held, held
    sent_before = int(fleet.task(task_id)["result"]["bytes_sent"])
    t0 = time.monotonic()
    s.sh("systemctl stop zrepq-worker")  # returns when the unit has stopped
    took = time.monotonic() - t0
    try:
        state = fleet.task(task_id)
        assert state.get("status") == "SUCCESS", state  # it finished before the worker left
        assert fleet.leases() == []
        assert s.unit("zrepq-worker", "ActiveState", "Result") == {
            "ActiveState": "inactive",
            "Result": "success",
        }
        log = s.sh("journalctl -u zrepq-worker -n 50 --no-pager").stdout
        assert "Warm shutdown" in log, log
        same = s.sh(f"cmp {STANDIN}/poola/data/big.bin {STANDIN}/poolb/data/big.bin", check=False)
        assert same.returncode == 0, same.stdout
        FIGURES["systemd: `systemctl stop` during a sync took (s)"] = (
            f"{took:.1f} (the sync had {(size - sent_before) / STREAM_RATE:.1f} s of stream left)"
        )
    finally:
        since = now(s)
        s.sh("systemctl start zrepq-worker")
        assert wait_until(lambda: fleet.worker_ready_since(since), 60, 0.5)
