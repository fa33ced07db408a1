"""Real components for the MQTT tests: a mosquitto the tests start, an agent process in its own
network namespace, and a controller client that records everything it receives and checks every
uplink message against the published schemas (tests/uplink_schemas.py says what and when)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from uplink_schemas import SchemaCheck

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port}")


class Broker:
    """mosquitto on a free port, with persistence so a restart keeps sessions and queued messages."""

    def __init__(self, workdir: Path, tls: dict | None = None, password_file: Path | None = None):
        self.port = free_port()
        self.dir = workdir
        self.tls = tls
        self.proc = None
        # user root: as root, mosquitto would otherwise switch to `mosquitto` and could not
        # write its log and persistence file in the test directory.
        auth = f"allow_anonymous false\npassword_file {password_file}" if password_file else "allow_anonymous true"
        conf = [f"listener {self.port}", "user root", auth, "persistence true", "set_tcp_nodelay true",
                f"persistence_location {workdir}/", "autosave_interval 1", "max_packet_size 2000000",
                f"log_dest file {workdir}/mosquitto.log"]
        if tls:
            conf += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}",
                     "require_certificate true"]
            # A plain listener on loopback only, for the test's own controller.
            self.plain_port = free_port()
            conf += [f"listener {self.plain_port} 127.0.0.1"]
        else:
            self.plain_port = self.port
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_listening(self.plain_port)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15) -> int:
    """Signal a process, kill it if it outlives `timeout`, and return its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class AgentHost:
    """A namespace joined to the test's own namespace by a veth: the agent's router.

    The root side (10.80.N.1) is the agent's default gateway and reaches the broker, so the
    agent never probes or talks to anything outside this machine.
    """

    def __init__(self, ns, octet: int):
        self.ns = ns
        self.root_if = f"rq{os.getpid() % 10000}h{octet}"
        self.agent_if = "eth0"
        self.gateway = f"10.80.{octet}.1"
        self.address = f"10.80.{octet}.2"
        subprocess.run(["ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.agent_if,
                        "netns", ns.name], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.root_if], check=True)
        subprocess.run(["ip", "link", "set", self.root_if, "up"], check=True)
        ns.run("ip", "addr", "add", f"{self.address}/24", "dev", self.agent_if)
        ns.run("ip", "link", "set", self.agent_if, "up")
        ns.run("ip", "route", "add", "default", "via", self.gateway)
        self.mac = ns.run("cat", f"/sys/class/net/{self.agent_if}/address").stdout.strip()
        self.device_id = self.mac.replace(":", "")

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.root_if], capture_output=True)
        self.ns.delete()


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def to_toml(config: dict) -> str:
    lines, tables = [], []
    for key, value in config.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for name, table in tables:
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


class AgentProcess:
    """`rtk-qos agent` running in the agent host's namespace with a TOML file of the test's."""

    def __init__(self, host: AgentHost, mqtt_broker: Broker, workdir: Path, **overrides):
        self.host = host
        self.workdir = workdir
        self.state_dir = workdir / "state"
        config = {
            "tenant": "lab", "site": "bench", "state_dir": str(self.state_dir), "log_level": "debug",
            "broker": {"host": host.gateway, "port": mqtt_broker.port, "reconnect_min_s": 0.5,
                       "reconnect_max_s": 2.0, "keepalive_s": 5},
            "telemetry": {"network_period_s": 2, "state_period_s": 60},
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                config.setdefault(key, {}).update(value)
            else:
                config[key] = value
        self.config = config
        self.config_path = workdir / "agent.toml"
        self.config_path.write_text(to_toml(config))
        self.log_path = workdir / "agent.log"
        self.proc = None
        self.start()

    @property
    def device_id(self) -> str:
        return self.config.get("device_id") or self.host.device_id

    @property
    def base(self) -> str:
        return f"rtk/v1/{self.config['tenant']}/{self.config['site']}/{self.device_id}"

    def start(self) -> None:
        self.log_file = open(self.log_path, "a")
        self.proc = self.host.ns.popen(sys.executable, "-m", "rtk_qos", "agent", "--config", str(self.config_path),
                                       stdout=self.log_file, stderr=subprocess.STDOUT)

    def stop(self, sig=signal.SIGTERM) -> int:
        code = stop_process(self.proc, sig)
        self.log_file.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# ---- controller --------------------------------------------------------------------------------

class Received:
    def __init__(self, topic: str, payload: bytes, at: float, props):
        self.topic = topic
        self.raw = payload
        self.at = at
        self.props = props
        try:
            self.json = json.loads(payload)
        except ValueError:
            self.json = None

    @property
    def body(self) -> dict:
        """The flat message, or the payload of an enveloped one."""
        message = self.json or {}
        return message["payload"] if isinstance(message.get("payload"), dict) else message


class Controller:
    """A test controller: subscribes, publishes requests, records replies with arrival times."""

    def __init__(self, port: int, mqtt5: bool = False, client_id: str | None = None, persistent: bool = False):
        self.schemas = SchemaCheck()
        self.checked: dict[str, int] = {}
        self.schema_errors: list[str] = []
        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.topics: list[str] = []
        self.mqtt5 = mqtt5
        cid = client_id or f"test-ctl-{uuid.uuid4().hex[:8]}"
        if mqtt5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not persistent,
                                      protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.subacked: set[int] = set()
        self.connected = threading.Event()
        self.client.connect("127.0.0.1", port, 10)
        self.client.loop_start()
        assert self.connected.wait(10), "controller did not connect"

    def _on_connect(self, client, _u, _f, reason, _p):
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the agent does
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_subscribe(self, _c, _u, mid, _reasons, _p):
        with self.cond:
            self.subacked.add(mid)
            self.cond.notify_all()

    def _on_message(self, _c, _u, msg):
        received = Received(msg.topic, msg.payload, time.monotonic(), getattr(msg, "properties", None))
        if isinstance(received.json, dict):
            try:
                names = self.schemas.check(msg.topic, received.json)
            except (self.schemas.jsonschema.ValidationError, ValueError) as exc:
                # Raising here would stop paho's thread; the fixture fails the test instead.
                where = "/".join(str(p) for p in getattr(exc, "absolute_path", ()))
                self.schema_errors.append(f"{msg.topic}: {getattr(exc, 'message', exc)}"
                                          f"{f' at {where}' if where else ''} in {received.raw[:300]!r}")
                names = []
            for name in names:
                self.checked[name] = self.checked.get(name, 0) + 1
        with self.cond:
            self.messages.append(received)
            self.cond.notify_all()

    def subscribe(self, *topics: str) -> None:
        """Subscribe and wait for the broker's SUBACKs: what is published next reaches us."""
        mids = []
        for topic in topics:
            self.topics.append(topic)
            result, mid = self.client.subscribe(topic, qos=1)
            assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe {topic}: {mqtt.error_string(result)}"
            mids.append(mid)
        with self.cond:
            assert self.cond.wait_for(lambda: self.subacked.issuperset(mids), 10), f"no SUBACK for {topics}"

    def publish(self, topic: str, payload, response_topic: str | None = None, correlation: bytes | None = None,
                qos: int = 1) -> float:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        props = None
        if response_topic is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        sent = time.monotonic()
        self.client.publish(topic, data, qos=qos, properties=props).wait_for_publish(5)
        return sent

    def wait_for(self, predicate, timeout: float = 30, count: int = 1) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.messages if predicate(m)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting; got {len(found)} of {count}; last messages: "
                                         f"{[(m.topic, m.raw[:200]) for m in self.messages[-5:]]}")
                self.cond.wait(remaining)

    def replies(self, command_id: str, kind: str | None = None) -> list[Received]:
        """Replies answering `command_id` (never the request itself); kind: 'ack' or 'result'."""
        with self.cond:
            return [m for m in self.messages if m.body.get("id") == command_id and reply_kind(m) and
                    (kind is None or reply_kind(m) == kind)]

    def wait_reply(self, command_id: str, kind: str, timeout: float = 30) -> Received:
        return self.wait_for(lambda m: m.body.get("id") == command_id and reply_kind(m) == kind, timeout)[0]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def reply_kind(message: Received) -> str | None:
    """'ack', 'result' (results and cmd.error) or None (requests, everything else)."""
    schema = (message.json or {}).get("schema", "") if isinstance(message.json, dict) else ""
    if schema == "cmd.ack/1.0":
        return "ack"
    if schema == "cmd.error/1.0" or (schema.startswith("cmd.") and ".result/" in schema):
        return "result"
    return None


def flat_request(op: str, args: dict, command_id: str | None = None, **fields) -> dict:
    return {"id": command_id or f"t-{uuid.uuid4().hex[:12]}", "op": op, "schema": f"cmd.{op}/1.0",
            "args": args, "ts": int(time.time() * 1000), **fields}


def enveloped_request(op: str, args: dict, device_id: str, command_id: str | None = None, **fields) -> dict:
    return {"schema": f"cmd.{op}/1.0", "ts": int(time.time() * 1000), "device_id": device_id,
            "payload": {"id": command_id or f"t-{uuid.uuid4().hex[:12]}", "op": op, "args": args, **fields}}


def online(ctl, agent, timeout=20):
    """Wait for the agent's retained lwt `online`."""
    return ctl.wait_for(lambda m: m.topic == f"{agent.base}/lwt" and m.body.get("status") == "online", timeout)
