"""A local broker for a first run: when no broker is configured and none answers on
localhost:1883, the agent launches mosquitto itself so `make run` works on a bare machine."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)
LOG_BYTES = 256 * 1024  # per log file; one previous file (.1) is kept beside it


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
    """mosquitto on 127.0.0.1, anonymous, no persistence, stopped with the agent.

    Its log (one line per connect and disconnect) goes to `<log_dir>/mosquitto.log`, at most
    `log_bytes` plus the previous file: read from its stderr by a thread of ours, since a pipe
    nobody reads fills after 64 KiB and then blocks the broker."""

    def __init__(self, port: int, log_dir: str, log_bytes: int = LOG_BYTES):
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
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        self.log_path = os.path.join(log_dir, "mosquitto.log")
        # A session of its own: the terminal's Ctrl-C reaches the agent, which says offline through
        # this broker and then stops it, instead of the broker dying under the agent's last words.
        self.proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._logger = threading.Thread(target=self._keep_log, args=(log_bytes,), name="rtk-qos-broker-log",
                                        daemon=True)
        self._logger.start()
        deadline = time.monotonic() + 5
        while not listening("127.0.0.1", port, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                exited = self.proc.poll() is not None
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {port}: "
                                   f"{self._log_tail() if exited else 'not listening after 5 s'}")
            time.sleep(0.05)

    def _keep_log(self, log_bytes: int) -> None:
        out = open(self.log_path, "ab")
        try:
            for line in self.proc.stderr:
                if out.tell() + len(line) > log_bytes:
                    out.close()
                    os.replace(self.log_path, self.log_path + ".1")
                    out = open(self.log_path, "wb")
                out.write(line)
                out.flush()
        finally:
            out.close()

    def _log_tail(self) -> str:
        self._logger.join(1.0)  # the broker exited: its last lines are on their way
        with open(self.log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 300))
            return f.read().decode(errors="replace").strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._logger.join(1.0)
        self._dir.cleanup()


def ensure(config: dict) -> Optional[LocalBroker]:
    """Start a local broker when the configuration names none and nothing listens on the default."""
    broker = config["broker"]
    if config["_broker_configured"] or listening(broker["host"], broker["port"]):
        return None
    port = broker["port"] if broker["host"] in ("localhost", "127.0.0.1") else free_port()
    local = LocalBroker(port, config["state_dir"])
    broker["host"], broker["port"] = "127.0.0.1", port
    log.info("no broker configured or answering: started mosquitto on 127.0.0.1:%d", port)
    return local
