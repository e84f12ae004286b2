"""Operating zrepq with real processes: configuration, liveness check, schedules, metrics and
the fleet view.

redis-server (also with a password, TLS, and behind Redis Sentinel), `zrepq-worker` per host
over stand-in zfs behind real sshd, `zrepq scheduler` (celery beat + redbeat), `zrepq metrics`
and the `zrepq` CLI, all as subprocesses.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from producer.api import Producer
from producer.watch import wait
from tasks.app import make_app
from tests.harness.fleet import Fleet, Site
from tests.harness.netutil import REPO, children_of, cmdline, free_port, wait_until
from tests.harness.ops import (
    SCRIPTS,
    ConfiguredRedis,
    base_env,
    make_tls_files,
    scrape,
    start_metrics,
    start_scheduler,
    zrepq,
)
from tests.harness.redis_server import RedisServer
from tests.harness.services import (
    Service,
    spawn_logged,
    start_site_workers,
    start_worker,
    stop_all,
    worker_env,
)
from tests.harness.signing import signed
from tests.harness.sshd import SshdCluster
from tests.harness.standin import StandinHost, standin_env
from workers.keys import host_key, queue_name
from workers.settings import load

pytestmark = pytest.mark.integration

HOSTS = ("oa", "ob")


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops")


@pytest.fixture(scope="module")
def ops_env(redis_server: RedisServer) -> dict[str, str]:
    """What every zrepq process of this module gets: the broker, a quick scheduler."""
    return base_env(
        ZREPQ_BROKER_URL=redis_server.url,
        ZREPQ_BEAT_LOCK_TIMEOUT="6",
        ZREPQ_BEAT_MAX_INTERVAL="1",
    )


@pytest.fixture(scope="module")
def services(
    sshd_cluster: SshdCluster,
    redis_server: RedisServer,
    ops_env: dict[str, str],
    logdir: Path,
) -> Iterator[dict[str, Service]]:
    started = start_site_workers(
        sshd_cluster,
        HOSTS,
        redis_server.url,
        logdir,
        ZREPQ_CONFIG="none",
        ZREPQ_CHECK_TIMEOUT="8",
    )
    try:
        started["scheduler"] = start_scheduler(ops_env, logdir)
        yield started
    finally:
        stop_all(started)


@pytest.fixture
def ops(
    fleet: Callable[..., Fleet], services: dict[str, Service], redis_server: RedisServer
) -> tuple[Fleet, Producer]:
    f = fleet(*HOSTS)
    client = redis_server.client()
    for key in client.scan_iter("zrepq:beat:*"):
        if not key.endswith(b":lock"):
            client.delete(key)
    for key in client.scan_iter("zrepq:syncs:*"):
        client.delete(key)
    return f, Producer(
        app=make_app(signed({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": redis_server.url}))
    )


def done(r: Any, timeout: float = 120) -> dict[str, Any]:
    return wait({"t": r}, timeout=timeout, show=False)["t"]


def setup_pair(f: Fleet, p: Producer, leaf: str) -> tuple[Site, Site]:
    a, b = f["oa"], f["ob"]
    a.zfs.zfs("create", a.fs(leaf))
    a.zfs.write(a.fs(leaf), "data.txt", b"hello\n")
    rec = done(p.init(a.fs(leaf), "ob", b.fs(leaf), host="oa"))
    assert rec["ok"], rec
    return a, b


def worker_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.main", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


def start_configured_worker(
    host: str, env: dict[str, str], logdir: Path, timeout: float = 60
) -> Service:
    """A worker whose settings come from a TOML file: wait for it through those settings."""
    client = load(env).redis()
    client.delete(host_key(host))
    log = logdir / f"worker-{host}.log"
    svc = Service(host, spawn_logged([sys.executable, "-m", "workers.main"], env, log), log)
    ok = wait_until(
        lambda: svc.proc.poll() is not None or bool(client.get(host_key(host))), timeout, 0.2
    )
    if not ok or svc.proc.poll() is not None:
        svc.stop()
        raise RuntimeError(f"worker {host} did not register:\n{svc.output()}")
    return svc


# ---- configuration -----------------------------------------------------------------------


def test_bad_configuration_stops_every_process_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "zrepq.toml"
    cfg.write_text(
        "[broker]\n"
        'url = "http://127.0.0.1:1/0"\n'
        "visibility_timeout = 0\n"
        "[worker]\n"
        "concurency = 4\n"
        "[ssh]\n"
        'identity = "/nonexistent/key"\n'
    )
    env = base_env(ZREPQ_CONFIG=str(cfg), ZREPQ_LEASE_TTL="soon")
    res = subprocess.run(
        [sys.executable, "-m", "workers.main"], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 78, res
    err = res.stderr
    assert f"[broker] url in {cfg}" in err and "rediss://" in err
    assert f"[broker] visibility_timeout in {cfg}: Input should be greater than 0" in err
    assert "[worker] concurency" in err and "did you mean concurrency?" in err
    assert "ZREPQ_LEASE_TTL" in err and "'soon'" in err
    # The same file stops the CLI and a Celery process (Flower, beat) with the same words.
    res = zrepq(env, "hosts")
    assert res.returncode == 78 and "did you mean concurrency?" in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks.app", "beat"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and "did you mean concurrency?" in res.stdout + res.stderr
    # Once the schema is right, cross-checks run: missing files, zrep's own rules.
    cfg.write_text(
        '[ssh]\nidentity = "/nonexistent/key"\n[zrep]\nsend_flags = "-X"\n'
        "[broker]\nsentinels = ['127.0.0.1:26379']\n"
    )
    res = zrepq(base_env(ZREPQ_CONFIG=str(cfg)), "config")
    assert res.returncode == 78
    assert f"[ssh] identity in {cfg}: /nonexistent/key does not exist" in res.stderr
    assert "sentinel_master" in res.stderr and "ZREP_SEND_FLAGS: '-X'" in res.stderr
    res = zrepq(base_env(ZREPQ_CONFIG=str(tmp_path / "missing.toml")), "config")
    assert res.returncode == 78 and "does not exist" in res.stderr
    # zrep's own variable keeps zrep's name in the message.
    res = zrepq(base_env(ZREP_SAVE_COUNT="many"), "config")
    assert res.returncode == 78 and "ZREP_SAVE_COUNT must be a number" in res.stderr


def test_an_unbalanced_quote_in_zreps_variables_stops_each_process_without_a_traceback(
    tmp_path: Path,
) -> None:
    # zrep's variables as an admin's /etc/default/zrep may hold them, one quote short.
    bad = {"ZREP_SEND_FLAGS": '-c "', "SSH": "ssh -o 'Ciphers=aes128-ctr", "ZREPQ_HOST": "qa"}
    env = base_env(**bad, ZREPQ_LOCK_DIR=str(tmp_path))
    named = ("ZREP_SEND_FLAGS: cannot split '-c \"'", "SSH: cannot split", "unbalanced quote")
    runs = {
        # zrepq-local exits as zrep does on a bad setting: 1, with its "Error: " line.
        "zrepq-local": ([sys.executable, "-c", "from workers.cli import run; run()", "status"], 1),
        "zrepq-worker": ([sys.executable, "-m", "workers.main"], 78),
        "celery worker": ([sys.executable, "-m", "celery", "-A", "tasks.app", "worker"], 78),
    }
    for name, (argv, code) in runs.items():
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
        out = res.stdout + res.stderr
        assert res.returncode == code, (name, res)
        assert all(words in out for words in named), (name, out)
        assert "Traceback" not in out and "ValueError" not in out, (name, out)


def _http_status(url: str, auth: str | None = None) -> int:
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return int(res.status)
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:
        return 0  # not listening (yet)


def test_zrepq_flower_takes_its_basic_auth_from_the_flower_table(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    password = "fl-" + os.urandom(6).hex()
    cfg = tmp_path / "zrepq.toml"
    cfg.write_text(f'[flower]\nusername = "ops"\npassword = "{password}"\n')
    port = free_port()
    env = base_env(ZREPQ_CONFIG=str(cfg), ZREPQ_BROKER_URL=redis_server.url)
    env.pop("FLOWER_BASIC_AUTH", None)
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    log = tmp_path / "flower.log"
    argv = [*SCRIPTS["zrepq"], "flower", f"--port={port}", "--address=127.0.0.1"]
    svc = Service("flower", spawn_logged(argv, env, log), log, port=port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _http_status(f"{base}/healthcheck") == 200, 60, 0.5), svc.output()
        for page in ("/", "/api/workers", "/tasks"):
            assert _http_status(base + page) == 401, page
            assert _http_status(base + page, "ops:wrong") == 401, page
        assert _http_status(f"{base}/api/workers", f"ops:{password}") == 200
        assert _http_status(f"{base}/tasks", f"ops:{password}") == 200
        # The password travels in Flower's environment, never on a command line `ps` shows.
        assert password not in " ".join(cmdline(svc.proc.pid))  # zrepq exec'd Flower
    finally:
        svc.stop()
    # Half the credentials, or Flower's own as well: refused before Flower starts, named.
    cfg.write_text('[flower]\nusername = "ops"\n')
    res = zrepq(env, "flower", f"--port={port}")
    assert res.returncode == 78 and "username and password go together" in res.stderr, res
    cfg.write_text(f'[flower]\nusername = "ops"\npassword = "{password}"\n')
    res = zrepq({**env, "FLOWER_BASIC_AUTH": "a:b"}, "flower", f"--port={port}")
    assert res.returncode == 78 and "so is Flower's FLOWER_BASIC_AUTH" in res.stderr, res
    res = zrepq(env, "flower", "--basic-auth=a:b", f"--port={port}")
    assert res.returncode == 78 and "so is Flower's --basic-auth" in res.stderr, res


def test_file_settings_reach_the_worker_and_env_overrides_them(tmp_path: Path) -> None:
    cfg = tmp_path / "zrepq.toml"
    cfg.write_text(
        '[worker]\nhost = "filehost"\nconcurrency = 3\n'
        "[hosts.otherhost]\nconcurrency = 7\n"
        '[zrep]\ntag = "zrep-dr"\nresume = true\nsave_count = 9\n'
        '[ssh]\ncipher = "aes128-gcm@openssh.com"\nuser = "repl"\n'
    )
    env = base_env(ZREPQ_CONFIG=str(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "workers.main", "--print-config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "host=filehost concurrency=3 queue=zrepq.host.filehost" in out
    env["ZREPQ_HOST"] = "otherhost"  # per-host concurrency from [hosts.otherhost]
    out = subprocess.run(
        [sys.executable, "-m", "workers.main", "--print-config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "host=otherhost concurrency=7" in out
    s = load(env)  # what the worker's Celery process builds for itself, from the same inputs
    zrep, ssh = s.engine_config(), s.ssh_options()
    assert zrep.tag == "zrep-dr" and zrep.resume is True and zrep.save_count == 9
    assert ssh.cipher == "aes128-gcm@openssh.com" and ssh.user == "repl"
    # zrep's variable in the environment wins over the file, with zrep's meaning.
    assert load({**env, "ZREP_SAVE_COUNT": "3"}).engine_config().save_count == 3


def test_password_protected_redis_from_the_file(tmp_path: Path, sshd_cluster: SshdCluster) -> None:
    password = "pw-" + os.urandom(6).hex()
    srv = ConfiguredRedis(tmp_path / "redis", [f"requirepass {password}"])
    srv.start()
    svc = None
    try:
        (tmp_path / "redis.pass").write_text(password + "\n")
        cfg = tmp_path / "zrepq.toml"
        cfg.write_text(
            f'[broker]\nurl = "redis://127.0.0.1:{srv.port}/0"\n'
            f'password_file = "{tmp_path / "redis.pass"}"\n'
            '[worker]\nhost = "pwhost"\n'
        )
        site = StandinHost(tmp_path / "root", "pwhost")
        site.create_pool("poolpw")
        env = {**standin_env(site.root, base_env()), "ZREPQ_CONFIG": str(cfg)}
        svc = start_configured_worker("pwhost", env, tmp_path)
        res = zrepq(env, "-H", "pwhost", "status", "-a")
        assert res.returncode == 0, res.stderr
        res = zrepq(env, "hosts")
        assert res.returncode == 0 and "pwhost" in res.stdout
        # A wrong password: a clear error, and the password is never printed.
        (tmp_path / "redis.pass").write_text("wrong-password\n")
        res = zrepq(env, "hosts")
        assert res.returncode == 1 and "cannot reach the broker" in res.stderr
        assert "wrong-password" not in res.stderr and password not in res.stderr
    finally:
        if svc:
            svc.stop()
        srv.stop()


def test_rediss_tls_broker(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    srv = ConfiguredRedis(tmp_path / "redis", [])
    tls_port = srv.port
    srv.lines = [
        f"tls-port {tls_port}",
        f"tls-cert-file {tls['cert']}",
        f"tls-key-file {tls['key']}",
        f"tls-ca-cert-file {tls['ca']}",
        "tls-auth-clients no",
    ]
    srv.start(listen_port=tls_port)
    svc = None
    try:
        cfg = tmp_path / "zrepq.toml"
        cfg.write_text(
            f'[broker]\nurl = "rediss://127.0.0.1:{tls_port}/0"\ntls_ca_file = "{tls["ca"]}"\n'
            '[worker]\nhost = "tlshost"\n'
        )
        site = StandinHost(tmp_path / "root", "tlshost")
        site.create_pool("pooltls")
        site.zfs("create", "pooltls/fs")
        env = {
            **standin_env(site.root, base_env()),
            "ZREPQ_CONFIG": str(cfg),
            "ZREPQ_CHECK_TIMEOUT": "10",
        }
        svc = start_configured_worker("tlshost", env, tmp_path)
        res = zrepq(env, "-H", "tlshost", "--json", "list")
        assert res.returncode == 0, res.stderr
        res = worker_check(env)
        assert res.returncode == 0 and "probe ran" in res.stdout, res.stdout + res.stderr
        # Without the CA the certificate is refused: TLS is really verified.
        bad = {
            **env,
            "ZREPQ_CONFIG": "none",
            "ZREPQ_BROKER_URL": f"rediss://127.0.0.1:{tls_port}/0",
        }
        res = zrepq(bad, "hosts")
        assert res.returncode == 1 and "certificate" in res.stderr.lower()
    finally:
        if svc:
            svc.stop()
        srv.stop()


def test_redis_sentinel_broker_worker_producer_and_schedules(tmp_path: Path) -> None:
    password = "sentinel-pw"
    master = ConfiguredRedis(tmp_path / "master", [f"requirepass {password}"])
    master.start()
    sentinel = ConfiguredRedis(
        tmp_path / "sentinel",
        [
            f"sentinel monitor zmaster 127.0.0.1 {master.port} 1",
            f"sentinel auth-pass zmaster {password}",
            "sentinel down-after-milliseconds zmaster 5000",
        ],
        sentinel=True,
    )
    sentinel.start()
    svc = beat = None
    try:
        cfg = tmp_path / "zrepq.toml"
        cfg.write_text(
            "[broker]\n"
            f'sentinels = ["127.0.0.1:{sentinel.port}"]\n'
            'sentinel_master = "zmaster"\n'
            f'password = "{password}"\n'
            '[worker]\nhost = "senthost"\n'
            "[scheduler]\nlock_timeout = 6\nmax_interval = 1\n"
        )
        site = StandinHost(tmp_path / "root", "senthost")
        site.create_pool("poolsent")
        site.zfs("create", "poolsent/fs")
        env = {**standin_env(site.root, base_env()), "ZREPQ_CONFIG": str(cfg)}
        settings = load(env)
        assert settings.broker_url().startswith("sentinel://:")
        svc = start_configured_worker("senthost", env, tmp_path)
        res = zrepq(env, "-H", "senthost", "list")
        assert res.returncode == 0, res.stderr
        # Schedules live in the same Redis, reached through the sentinel.
        res = zrepq(env, "-H", "senthost", "schedule", "add", "sx", "expire", "--every", "2s")
        assert res.returncode == 0, res.stderr
        beat = start_scheduler(env, tmp_path, "sentinel-scheduler")
        client = settings.redis()

        def fired() -> bool:
            rows = json.loads(zrepq(env, "--json", "schedule", "list").stdout or "[]")
            return bool(rows) and rows[0]["total_run_count"] >= 1

        assert wait_until(fired, 60, 1), beat.output()
        assert client.ping()
    finally:
        for s in (beat, svc):
            if s:
                s.stop()
        sentinel.stop()
        master.stop()


# ---- liveness check ----------------------------------------------------------------------


def test_worker_check_catches_a_worker_that_stopped_consuming(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    site = StandinHost(tmp_path / "root", "chk")
    site.create_pool("poolchk")
    env = worker_env(
        "chk",
        redis_server.url,
        standin_env(site.root),
        None,
        ZREPQ_CONFIG="none",
        ZREPQ_CHECK_TIMEOUT="5",
    )
    svc = start_worker("chk", env, tmp_path)
    app = make_app(signed({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": redis_server.url}))
    try:
        res = worker_check(env)
        assert res.returncode == 0 and "probe ran" in res.stdout, res.stdout + res.stderr
        # Alive, answering pings, but not consuming its queue (as after a bad reconnect).
        app.control.cancel_consumer(queue_name("chk"), destination=["zrepq@chk"], reply=True)
        res = worker_check(env)
        assert res.returncode == 69 and "does not consume zrepq.host.chk" in res.stdout
        app.control.add_consumer(queue_name("chk"), destination=["zrepq@chk"], reply=True)
        assert worker_check(env).returncode == 0
        # Pool processes frozen: pings and queue lists still fine, but nothing runs.
        pool = children_of(svc.pid)
        for pid in pool:
            os.kill(pid, signal.SIGSTOP)
        try:
            res = worker_check(env)
            assert res.returncode == 69 and "did not run a probe" in res.stdout, res.stdout
        finally:
            for pid in pool:
                os.kill(pid, signal.SIGCONT)
        svc.stop()
        res = worker_check(env)
        assert res.returncode == 69 and "did not answer a ping" in res.stdout
    finally:
        svc.stop()
        app.close()
        redis_server.client().delete(host_key("chk"))  # a host that is gone for good


# ---- schedules ---------------------------------------------------------------------------


def test_schedule_add_list_fire_remove(
    ops: tuple[Fleet, Producer], ops_env: dict[str, str]
) -> None:
    f, p = ops
    a, b = setup_pair(f, p, "sched")
    a.zfs.write(a.fs("sched"), "data.txt", b"changed before the schedule\n")
    res = zrepq(
        ops_env, "schedule", "add", "every-2s", "sync", f"oa:{a.fs('sched')}", "--every", "2s"
    )
    assert res.returncode == 0, res.stderr
    assert "every 2s" in res.stdout and f"sync oa:{a.fs('sched')}" in res.stdout
    # The same name again is refused unless replaced.
    res = zrepq(ops_env, "schedule", "add", "every-2s", "sync", "all", "--every", "1h")
    assert res.returncode == 1 and "exists" in res.stderr
    res = zrepq(ops_env, "schedule", "add", "bad", "sync", "oa:pool/x;rm", "--every", "1m")
    assert res.returncode == 1 and "invalid dataset name" in res.stderr
    res = zrepq(ops_env, "schedule", "add", "bad", "sync", "all", "--cron", "61 * * * *")
    assert res.returncode == 1
    # It fires and the task runs on oa's worker: the standby gets the new data.
    assert wait_until(
        lambda: b.zfs.read(b.fs("sched"), "data.txt") == b"changed before the schedule\n", 60, 0.5
    )
    listed = json.loads(zrepq(ops_env, "--json", "schedule", "list").stdout)
    assert [d["name"] for d in listed] == ["every-2s"]
    assert listed[0]["total_run_count"] >= 1 and listed[0]["last_run_at"]
    res = zrepq(ops_env, "schedule", "list")
    assert res.stdout.startswith("every-2s") and "runs:" in res.stdout
    res = zrepq(ops_env, "schedule", "remove", "every-2s")
    assert res.returncode == 0 and "removed every-2s" in res.stdout
    assert zrepq(ops_env, "schedule", "list").stdout.strip() == "no schedules"
    assert zrepq(ops_env, "schedule", "remove", "every-2s").returncode == 1


def test_fleet_schedule_runs_sync_all_on_every_registered_host(
    ops: tuple[Fleet, Producer], ops_env: dict[str, str]
) -> None:
    f, p = ops
    a, b = setup_pair(f, p, "fleet1")
    b.zfs.zfs("create", b.fs("back"))
    b.zfs.write(b.fs("back"), "f", b"on ob\n")
    assert done(p.init(b.fs("back"), "oa", a.fs("back"), host="ob"))["ok"]
    a.zfs.write(a.fs("fleet1"), "data.txt", b"v2\n")
    b.zfs.write(b.fs("back"), "f", b"v2 on ob\n")
    res = zrepq(ops_env, "schedule", "add", "all-hosts", "sync", "all", "--every", "2s", "-c")
    assert res.returncode == 0 and "sync all on (every host)" in res.stdout, res.stderr
    try:
        # One schedule, both hosts' masters synced.
        assert wait_until(lambda: b.zfs.read(b.fs("fleet1"), "data.txt") == b"v2\n", 60, 0.5)
        assert wait_until(lambda: a.zfs.read(a.fs("back"), "f") == b"v2 on ob\n", 60, 0.5)
    finally:
        zrepq(ops_env, "schedule", "remove", "all-hosts")


def test_standby_scheduler_takes_over_when_the_active_one_dies(
    ops: tuple[Fleet, Producer],
    ops_env: dict[str, str],
    services: dict[str, Service],
    logdir: Path,
) -> None:
    f, p = ops
    a, b = setup_pair(f, p, "standby")
    standby = start_scheduler(ops_env, logdir, "standby-scheduler")
    try:
        time.sleep(2)
        # Only one holds the lock; the standby waits for it.
        assert "Acquired lock" in services["scheduler"].output()
        assert "Acquired lock" not in standby.output()
        os.killpg(services["scheduler"].pid, signal.SIGKILL)  # no clean release
        assert wait_until(lambda: "Acquired lock" in standby.output(), 30, 0.5), standby.output()
        a.zfs.write(a.fs("standby"), "data.txt", b"after failover of the scheduler\n")
        res = zrepq(
            ops_env, "schedule", "add", "s", "sync", f"oa:{a.fs('standby')}", "--every", "1s"
        )
        assert res.returncode == 0
        assert wait_until(
            lambda: b.zfs.read(b.fs("standby"), "data.txt") == b"after failover of the scheduler\n",
            60,
            0.5,
        )
    finally:
        zrepq(ops_env, "schedule", "remove", "s")
        services["scheduler"] = standby  # the module's scheduler from now on


# ---- metrics and the fleet view ------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    for (n, ls), v in samples.items():
        if n == name and set(labels.items()) <= set(ls):
            return v
    return None


def test_metrics_and_fleet_status(
    ops: tuple[Fleet, Producer], ops_env: dict[str, str], logdir: Path
) -> None:
    f, p = ops
    a, b = setup_pair(f, p, "good")
    a.zfs.write(a.fs("good"), "big.bin", os.urandom(300_000))
    assert done(p.sync(a.fs("good"), host="oa"))["ok"]
    setup_pair(f, p, "bad")
    b.zfs.zfs("snapshot", f"{b.fs('bad')}@stray")  # the standby was modified: sync fails
    assert not done(p.sync(a.fs("bad"), host="oa"))["ok"]
    setup_pair(f, p, "held")
    assert done(p.pause(a.fs("held"), host="oa", reason="disk swap"))["ok"]

    metrics = start_metrics(ops_env, logdir, "--status-interval", "1")
    try:

        def ready() -> bool:
            return _value(_samples(scrape(metrics.port)), "zrepq_worker_up", host="oa") == 1.0

        assert wait_until(ready, 60, 0.5), metrics.output()
        s = _samples(scrape(metrics.port))
        good = {"host": "oa", "dataset": a.fs("good"), "tag": "zrep"}
        bad = {"host": "oa", "dataset": a.fs("bad"), "tag": "zrep"}
        assert (_value(s, "zrepq_sync_last_bytes", **good) or 0) > 300_000
        assert (
            abs((_value(s, "zrepq_sync_last_success_timestamp_seconds", **good) or 0) - time.time())
            < 300
        )
        assert _value(s, "zrepq_sync_failures_total", **good) == 0
        assert _value(s, "zrepq_sync_failures_total", **bad) == 1
        assert _value(s, "zrepq_sync_last_failed", **bad) == 1
        assert _value(s, "zrepq_dataset_error", **bad) == 1
        assert _value(s, "zrepq_dataset_paused", host="oa", dataset=a.fs("held")) == 1
        lag = _value(s, "zrepq_replication_lag_seconds", **good)
        assert lag is not None and 0 <= lag < 300
        assert (_value(s, "zrepq_hosts_registered") or 0) >= 2
        assert _value(s, "zrepq_queue_messages", host="ob") == 0
    finally:
        metrics.stop()

    res = zrepq(ops_env, "status", "--fleet")
    out = res.stdout
    assert res.returncode == 1, out  # a failed dataset: non-zero, like a check
    assert "oa" in out and "up" in out
    assert a.fs("good") in out and f"ob:{b.fs('good')}" in out
    assert "paused (disk swap)" in out
    assert "FAILED" in out and "LAST FAILURES" in out and "stray" in out
    data = json.loads(zrepq(ops_env, "--json", "status", "--fleet").stdout)
    states = {d["dataset"]: d["state"] for d in data["datasets"]}
    assert states[a.fs("good")] == "ok" and states[a.fs("bad")] == "failed"
    assert states[a.fs("held")] == "paused"
    assert data["hosts"]["oa"]["alive"] and data["hosts"]["ob"]["alive"]
