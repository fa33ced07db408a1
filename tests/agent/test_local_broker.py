"""The mosquitto `make run` starts for a first run keeps working however much it logs."""
import socket
import struct
import threading

from mqtt_harness import Controller, free_port
from rtk_qos.agent.broker import LocalBroker

LOG_BYTES = 16 * 1024


def _connect_and_leave(port: int, client_id: str) -> None:
    """One MQTT 3.1.1 CONNECT, its CONNACK, then DISCONNECT: three log lines on the broker."""
    name = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(name)) + name
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(bytes([0x10, len(variable)]) + variable)
        assert s.recv(4) == b"\x20\x02\x00\x00", "no CONNACK: the broker is stuck"
        s.sendall(b"\xe0\x00")


def test_a_chatty_broker_keeps_working_and_its_log_stays_bounded(tmp_path):
    broker = LocalBroker(free_port(), str(tmp_path / "state"), log_bytes=LOG_BYTES)
    try:
        # About 200 bytes of log per client: 1500 clients write 300 KB, far past the 64 KiB
        # a pipe holds before a broker writing to it unread blocks.
        for i in range(1500):
            _connect_and_leave(broker.port, f"chatty-{i}")
        ctl = Controller(broker.port)
        got = threading.Event()
        ctl.client.on_message = lambda *_: got.set()
        ctl.subscribe("lab/after-the-chatter")
        ctl.publish("lab/after-the-chatter", b"still here")
        assert got.wait(5)
        ctl.close()
        log, previous = tmp_path / "state" / "mosquitto.log", tmp_path / "state" / "mosquitto.log.1"
        assert 0 < log.stat().st_size <= LOG_BYTES and 0 < previous.stat().st_size <= LOG_BYTES
        assert "chatty-1499" in log.read_text() + previous.read_text()
    finally:
        broker.stop()
