"""A local broker for a first run: when no broker is configured and none answers on
localhost:1883, the agent launches mosquitto itself so `make run` works on a bare machine."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

log = logging.getLogger(__name__)


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """mosquitto on 127.0.0.1, anonymous, no persistence, stopped with the agent."""

    def __init__(self, port: int):
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
        if binary is None:
            raise RuntimeError("no broker configured, none on localhost:1883, and mosquitto is not installed "
                               "(apt-get install mosquitto, or set broker.host)")
        self.port = port
        self._dir = tempfile.TemporaryDirectory(prefix="rtk-qos-broker-")
        conf = os.path.join(self._dir.name, "mosquitto.conf")
        with open(conf, "w") as f:
            # set_tcp_nodelay: without it mosquitto holds the tail of each PUBLISH for the
            # agent's delayed ACK, and every ack leaves 40 ms late.
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n")
        self.proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while not listening("127.0.0.1", port, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {port}: {err.strip()[:300]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._dir.cleanup()


def ensure(config: dict) -> Optional[LocalBroker]:
    """Start a local broker when the configuration names none and nothing listens on the default."""
    broker = config["broker"]
    if config["_broker_configured"] or listening(broker["host"], broker["port"]):
        return None
    port = broker["port"] if broker["host"] in ("localhost", "127.0.0.1") else free_port()
    local = LocalBroker(port)
    broker["host"], broker["port"] = "127.0.0.1", port
    log.info("no broker configured or answering: started mosquitto on 127.0.0.1:%d", port)
    return local
