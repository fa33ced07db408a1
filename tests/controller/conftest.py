"""The controller as a process (its own state dir, a free HTTP port, the test's mosquitto), an HTTP
helper, and targets whose ICMP answers come from the scheduled reflector."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import netns
from mqtt_harness import free_port, stop_process, to_toml, wait_listening
from postgres_server import PostgresServer

REFLECTOR = Path(__file__).resolve().parents[1] / "reflector.py"


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session, started the first time a test asks for it."""
    server = PostgresServer()
    yield server
    server.stop()


class Backend:
    """A store URL of one backend, and plain SQL on the same database for the tests' own checks."""

    def __init__(self, name: str, url: str):
        self.name = name
        self.url = url

    def query(self, sql: str) -> list[tuple]:
        if self.name == "sqlite":
            with sqlite3.connect(self.url[len("sqlite://"):]) as db:
                return db.execute(sql).fetchall()
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(sql)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """Each store test runs on SQLite and on PostgreSQL (a database of its own on the session's server)."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite://{tmp_path}/c.db")
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield Backend("postgresql", url)
    server.drop_database(url)


class Http:
    def __init__(self, url: str, token: str | None):
        self.url = url
        self.token = token

    def call(self, method: str, path: str, body=None, token: str | None = "default", raw: bytes | None = None):
        """(status, decoded JSON body)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        token = self.token if token == "default" else token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str):
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body, expect: int = 200):
        status, answer = self.call("POST", path, body)
        assert status == expect, (path, status, answer)
        return answer

    def wait(self, path: str, predicate, timeout: float = 30, every: float = 0.2):
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(path)
            if predicate(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {path}: {json.dumps(body)[:800]}")
            time.sleep(every)


class ControllerProcess:
    def __init__(self, workdir: Path, broker_port: int, **overrides):
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.port = free_port()
        config = {"state_dir": str(self.state_dir), "log_level": "debug",
                  "broker": {"host": "127.0.0.1", "port": broker_port, "client_id": f"test-ctl-{os.getpid()}"},
                  "http": {"host": "127.0.0.1", "port": self.port, "token": "test-token"},
                  "fleet": {"gone_after_s": 3.0}, "sessions": {"finish_grace_s": 3.0}}
        for key, value in overrides.items():
            config.setdefault(key, {}).update(value) if isinstance(value, dict) else config.__setitem__(key, value)
        self.store_url = config.get("store", {}).get("url") or f"sqlite://{self.state_dir}/controller.db"
        self.config_path = workdir / "controller.toml"
        self.config_path.write_text(to_toml(config))
        self.log_path = workdir / "controller.log"
        self.http = Http(f"http://127.0.0.1:{self.port}", "test-token")
        self.proc = None
        self.start()

    def start(self) -> None:
        self.log_file = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "rtk_qos", "controller", "--config", str(self.config_path)],
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        wait_listening(self.port)
        # Connected means subscribed: what a test publishes from now on reaches the controller.
        self.http.wait("/api/status", lambda status: status["connected"])

    def stop(self, sig=signal.SIGTERM) -> int:
        code = stop_process(self.proc, sig)
        self.log_file.close()
        return code

    def db(self):
        """A read-only look at the controller's store: a DB-API connection of its backend."""
        if self.store_url.startswith("sqlite://"):
            return sqlite3.connect(f"file:{self.store_url[len('sqlite://'):]}?mode=ro", uri=True)
        import psycopg
        from psycopg.types.string import TextLoader
        db = psycopg.connect(self.store_url, autocommit=True)
        db.adapters.register_loader("jsonb", TextLoader)  # JSON as text, as SQLite gives it
        return db

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_controller(broker, tmp_path):
    procs = []

    def start(**overrides) -> ControllerProcess:
        workdir = tmp_path / f"controller{len(procs)}"
        workdir.mkdir()
        proc = ControllerProcess(workdir, broker.plain_port, **overrides)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def reflector(agent_host):
    """A host beside the agent whose echo replies come from tests/reflector.py on a schedule."""
    started = []

    def start(schedule: dict) -> str:
        octet = os.getpid() % 250 + 1
        ns = netns.Netns(f"{netns.PREFIX}-{os.getpid()}-crefl")
        here, there = f"10.81.{octet}.1", f"10.81.{octet}.2"
        subprocess.run(["ip", "-n", agent_host.ns.name, "link", "add", "t0", "type", "veth", "peer", "name", "eth0",
                        "netns", ns.name], check=True)
        agent_host.ns.run("ip", "addr", "add", f"{here}/24", "dev", "t0")
        agent_host.ns.run("ip", "link", "set", "t0", "up")
        ns.run("ip", "addr", "add", f"{there}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        ns.run("ip", "route", "add", "default", "via", here)
        ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        proc = ns.popen(sys.executable, str(REFLECTOR), json.dumps(schedule), stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        started.append((ns, proc))
        return there

    yield start
    for ns, proc in started:
        proc.kill()
        proc.wait()
        ns.delete()
