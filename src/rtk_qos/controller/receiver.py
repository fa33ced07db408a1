"""MQTT reception and publishing in a child process, so paho never competes with ingest for the GIL.

The parent (the engine's ingest thread) holds a `Receiver`; it starts
`python -m rtk_qos.controller.receiver` with two pipes, the child's stdin (commands) and stdout
(what it receives). The child runs one paho client per *session* and does nothing else: no
parsing, no storing, and above all no acknowledging on its own.

Commands (parent -> child), each a `Receiver` method:
  open(name, broker, client_id, subscriptions, session_expiry_s, receive_maximum)
      a persistent MQTT 5 session (clean start off, manual acks) under `name`; `broker` is the
      configuration's broker table (host, port, keepalive_s, username, password, tls, ca_file,
      cert_file, key_file); `subscriptions` topic filters, all at QoS 1. Reconnects by itself.
  subscribe(name, topics) / unsubscribe(name, topics)
      change a session's filters (kept for its reconnects too); a Subscribed event says when the
      broker has the new ones.
  close(name)
      DISCONNECT without acknowledging anything pending: the broker keeps the session (for its
      expiry) and sends the unacknowledged messages again to whoever resumes it.
  ack(link, mids)
      PUBACK these QoS 1 message ids of the connection `link` (from the batch they came in), after
      their commit. An ack of a connection that has since dropped (or of a receiver since
      restarted) is discarded: the broker resends those messages on the new connection and may
      reuse their ids for new ones, which a stale ack must never acknowledge.
  publish(topic, payload, qos, session=None)
      through `session`, or the first open one.

Events (child -> parent), from `Receiver.read()`:
  Batch(session, link, messages)
      messages in arrival order, each (topic: str, payload: bytes, qos, mid), as a burst of reads
      of the socket brought them (up to 250); `link` names the session's connection. The child queues
      nothing: a parent that does not read holds the session's thread in its pipe write, and
      so the broker's socket (TCP's own back-pressure).
  Up(session, link) / Down(session, reason)
      a session's connection came up (and the broker acknowledged its subscriptions; what it held
      for a resumed session may come before) or went down (closed, refused, lost).
  Subscribed(session, topics)
      the broker acknowledged a subscribe() of a connected session.

Framing: a 4-byte big-endian length and a `marshal`ed tuple. marshal encodes and decodes str,
bytes and int in C (about 0.05 us per message each way here, where a struct loop in Python costs
ten times that); both ends are the same interpreter, the only case marshal's format promises.

Lifetime: the child dies with its parent (PR_SET_PDEATHSIG SIGKILL, and it exits at EOF on its
command pipe), so a killed controller leaves no receiver holding its sessions; the parent sees a
dead child as EOF on its pipe and `restart()`s it, which opens every session again. Acks of the
old child's batches are then discarded (see ack): those messages come again and ingest is
idempotent.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import logging
import marshal
import os
import queue
import select
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)
HEADER = struct.Struct("!I")
FRAME_MESSAGES = 250   # messages per frame at most: a burst is forwarded in parts, not held back
READ_CHUNK = 1 << 16  # a pipe holds 64 KiB; a larger buffer would only cost its allocation
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Link:
    """One connection of one session, in one incarnation of the child."""
    generation: int
    session: str
    epoch: int


@dataclass
class Batch:
    session: str
    link: Link
    messages: list


@dataclass
class Up:
    session: str
    link: Link


@dataclass
class Subscribed:
    session: str
    topics: list


@dataclass
class Down:
    session: str
    reason: str


class ReceiverDied(Exception):
    pass


def _frame(item: tuple) -> bytes:
    body = marshal.dumps(item)
    return HEADER.pack(len(body)) + body


class _Frames:
    """Splits a byte stream into marshal'd frames."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple]:
        self.buffer += data
        items, at, size = [], 0, len(self.buffer)
        while size - at >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buffer, at)
            if size - at - HEADER.size < length:
                break
            start = at + HEADER.size
            items.append(marshal.loads(self.buffer[start:start + length]))
            at = start + length
        del self.buffer[:at]
        return items


# ---- the parent's side ------------------------------------------------------------------------

class Receiver:
    """The parent's handle on the receiver child. Not thread-safe for reading (one reader: ingest);
    commands may come from any thread."""

    def __init__(self, log_level: str = "info"):
        self.log_level = log_level
        self.generation = 0
        self.sessions: dict[str, dict] = {}  # name -> its open() arguments, subscriptions kept current
        self.up: dict[str, Link] = {}
        self.proc: Optional[subprocess.Popen] = None
        self._commands: Optional[queue.SimpleQueue] = None  # frames for this child's command pipe
        self._writer: Optional[threading.Thread] = None
        self._frames = _Frames()

    # lifecycle

    def start(self) -> None:
        self.generation += 1
        self._frames = _Frames()
        self.up.clear()
        # The child must die with the thread that starts it (PR_SET_PDEATHSIG follows the thread):
        # start it from a thread that lives as long as the engine.
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, "--log-level", self.log_level,
                                      "--parent", str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        os.set_blocking(self.proc.stdout.fileno(), False)
        # Commands go out from a thread of their own: were the ingest thread to block on a full
        # command pipe, it would stop reading events, and a child blocked on its full event pipe
        # (a session's thread, which the closing of that session waits for) would never read on.
        self._commands = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, args=(self.proc.stdin, self._commands),
                                        name="rtk-qos-receiver-commands", daemon=True)
        self._writer.start()
        for name, spec in self.sessions.items():
            self._send(("open", name, spec))

    def restart(self) -> None:
        """Start a new child after the old one died; every session is opened again."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._commands.put(None)  # what the old child did not take is dropped with it
            self._writer.join()
            self.proc.stdin.close()
            self.proc.stdout.close()
        self.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every session (nothing pending acknowledged) and end the child."""
        for name in list(self.sessions):
            self._send(("close", name))
        self._commands.put(None)
        self._writer.join(timeout)
        try:
            self.proc.stdin.close()  # EOF: the child disconnects what is left and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def fileno(self) -> int:
        """Readable when events wait: for select() beside other sources."""
        return self.proc.stdout.fileno()

    # commands

    def open(self, name: str, broker: dict, client_id: str, subscriptions: list[str],
             session_expiry_s: int, receive_maximum: int) -> None:
        spec = {"broker": dict(broker), "client_id": client_id, "subscriptions": list(subscriptions),
                "session_expiry_s": session_expiry_s, "receive_maximum": receive_maximum}
        self.sessions[name] = spec
        self._send(("open", name, spec))

    def subscribe(self, name: str, topics: list[str]) -> None:
        subs = self.sessions[name]["subscriptions"]
        subs += [t for t in topics if t not in subs]
        self._send(("subscribe", name, list(topics)))

    def unsubscribe(self, name: str, topics: list[str]) -> None:
        spec = self.sessions[name]
        spec["subscriptions"] = [t for t in spec["subscriptions"] if t not in topics]
        self._send(("unsubscribe", name, list(topics)))

    def close(self, name: str) -> None:
        del self.sessions[name]
        self.up.pop(name, None)
        self._send(("close", name))

    def ack(self, link: Link, mids: list[int]) -> None:
        if mids and link.generation == self.generation:
            self._send(("ack", link.session, link.epoch, mids))

    def publish(self, topic: str, payload: bytes, qos: int, session: Optional[str] = None) -> None:
        self._send(("publish", session or "", topic, bytes(payload), qos))

    def _send(self, item: tuple) -> None:
        self._commands.put(_frame(item))

    @staticmethod
    def _write(pipe, commands: queue.SimpleQueue) -> None:
        while (frame := commands.get()) is not None:
            try:
                view = memoryview(frame)
                while view:  # whole frames: a partial write would split one
                    view = view[pipe.write(view):]
            except (BrokenPipeError, ValueError, OSError):
                # The child is gone: reading will say so, and the restart opens the sessions again.
                log.debug("receiver gone; commands not sent")
                return

    # events

    def read(self) -> list:
        """The events ready now (without blocking); ReceiverDied when the child has gone."""
        try:
            data = os.read(self.fileno(), READ_CHUNK)
        except BlockingIOError:
            return []
        if not data:
            code = self.proc.wait()
            raise ReceiverDied(f"the receiver process ended (exit code {code})")
        events = []
        for item in self._frames.feed(data):
            kind = item[0]
            if kind == "m":
                _, session, epoch, messages = item
                events.append(Batch(session, Link(self.generation, session, epoch), messages))
            elif kind == "u":
                link = Link(self.generation, item[1], item[2])
                if item[1] in self.sessions:
                    self.up[item[1]] = link
                events.append(Up(item[1], link))
            elif kind == "s":
                events.append(Subscribed(item[1], item[2]))
            else:
                self.up.pop(item[1], None)
                events.append(Down(item[1], item[2]))
        return events


# ---- the child --------------------------------------------------------------------------------

class _Child:
    def __init__(self, out: int):
        self.out = out
        self.sessions: dict[str, _Session] = {}
        self.epochs = 0
        self._epoch_lock = threading.Lock()
        self._out_lock = threading.Lock()

    def next_epoch(self) -> int:
        with self._epoch_lock:
            self.epochs += 1
            return self.epochs

    def write(self, item: tuple) -> None:
        frame = _frame(item)
        with self._out_lock:
            view = memoryview(frame)
            while view:
                view = view[os.write(self.out, view):]

    def command(self, item: tuple) -> None:
        kind, name = item[0], item[1]
        if kind == "open":
            if name in self.sessions:
                self.sessions.pop(name).close()
            self.sessions[name] = _Session(self, name, item[2])
        elif kind == "publish":
            session = self.sessions.get(name) if name else next(iter(self.sessions.values()), None)
            if session is None:
                log.warning("publish to %s: no session %s", item[2], name or "open")
            else:
                session.do(session.publish, *item[2:])
        elif name not in self.sessions:
            log.warning("%s: no session %s", kind, name)
        elif kind == "close":
            self.sessions.pop(name).close()
        else:
            session = self.sessions[name]
            session.do({"ack": session.ack, "subscribe": session.subscribe,
                        "unsubscribe": session.unsubscribe}[kind], *item[2:])

    def close_all(self) -> None:
        for session in self.sessions.values():
            session.close()


def _varint(buf: bytes, at: int, end: int) -> tuple[int, int]:
    """MQTT's variable byte integer at buf[at:end]: (its value, where it ends); (-1, end) when it
    runs past `end`, (-1, -1) when it has more than four bytes (malformed)."""
    value = shift = 0
    while at < end:
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift == 28:
            return -1, -1
    return -1, end


def split_publishes(buf: bytes, pos: int, v5: bool, out: list, most: int = 1 << 62) -> tuple[int, int]:
    """Append (topic, payload, qos, mid) of each whole QoS 0 or 1 MQTT PUBLISH in buf[pos:] to
    `out`, as paho's on_message would have them, until `out` holds `most`. Returns where it
    stopped and, when a PUBLISH there is cut by the buffer's end, how many bytes it needs in all
    (at least); else 0 (the buffer is used up, `out` is full, or the packet there is one for paho:
    another type, QoS 2, a topic alias, malformed)."""
    end = len(buf)
    while pos < end and len(out) < most:
        first = buf[pos]
        if first & 0xF6 != 0x30 and first & 0xF6 != 0x32:
            return pos, 0
        length, at = _varint(buf, pos + 1, end)
        if length < 0:
            return pos, end - pos + 1 if at == end else 0
        stop = at + length
        if stop > end:
            return pos, stop - pos
        if length < 2:
            return pos, 0
        qos = first >> 1 & 3
        topic_end = at + 2 + (buf[at] << 8 | buf[at + 1])
        head = topic_end + 2 * qos  # after the packet id
        if v5:  # the properties: none that we need
            props, head = _varint(buf, head, stop)
            if props < 0:
                return pos, 0
            head += props
        if topic_end == at + 2 or head > stop:
            return pos, 0
        try:
            topic = buf[at + 2:topic_end].decode("utf-8")
        except UnicodeDecodeError:
            return pos, 0
        out.append((topic, buf[head:stop], qos, buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0))
        pos = stop
    return pos, 0


def _buffered_client(mqtt):
    class BufferedClient(mqtt.Client):
        """paho reads a packet in three or four recv() calls (its command byte, each length byte,
        the rest); these come from one recv() of up to READ_CHUNK bytes instead: a system call
        per burst, not several per message. Overrides paho's private `_sock_recv` (paho 2.x);
        were it gone, paho would simply read unbuffered.

        `take_publishes` splits the PUBLISH packets in that buffer itself: paho's parsing (a
        message object, its properties decoded, a callback) cost as much per message as the
        controller's whole ingest. paho still reads every other packet (CONNACK, SUBACK, PINGRESP,
        a QoS 2 or aliased PUBLISH, anything malformed, a packet it has begun) and sends all:
        connect, subscribe, acks, keepalive, disconnect."""
        _rbuf = b""
        _rpos = 0
        _lost: Optional[BaseException] = None  # what the socket said during take_publishes, for paho

        def _sock_recv(self, bufsize: int) -> bytes:
            if self._rpos >= len(self._rbuf):
                if self._lost is not None:  # paho hears it as if it had read the socket itself
                    lost, self._lost = self._lost, None
                    if isinstance(lost, EOFError):
                        return b""
                    raise lost
                self._rbuf, self._rpos = super()._sock_recv(READ_CHUNK), 0  # b"": the broker closed
            chunk = self._rbuf[self._rpos:self._rpos + bufsize]
            self._rpos += len(chunk)
            return chunk

        def buffered(self) -> bool:
            return self._rpos < len(self._rbuf) or self._lost is not None

        def discard_buffer(self) -> None:
            """Before a new connection: what is left belongs to the old one."""
            self._rbuf, self._rpos, self._lost = b"", 0, None

        def _fill(self) -> bool:
            """Add what the socket has to the buffer's unread part; False if nothing came."""
            try:
                data = super()._sock_recv(READ_CHUNK)
            except BlockingIOError:
                return False
            except Exception as exc:  # noqa: BLE001 - a lost connection: paho's to handle, at its next read
                self._lost = exc
                return False
            if not data:
                self._lost = EOFError()
                return False
            self._rbuf = self._rbuf[self._rpos:] + data if self._rpos < len(self._rbuf) else data
            self._rpos = 0
            return True

        def take_publishes(self, out: list) -> bool:
            """Append the QoS 0 and 1 messages at the head of the stream to `out` until it holds a
            frame's worth, reading the socket while they come. True when paho has to read next: a
            packet of its own, one it has begun, a cut one the socket has not completed yet, or
            a lost connection."""
            if not (self._in_packet["command"] or self._lost is not None):
                v5, taken = self._protocol == mqtt.MQTTv5, len(out)
                while len(out) < FRAME_MESSAGES:
                    self._rpos, wanted = split_publishes(self._rbuf, self._rpos, v5, out, FRAME_MESSAGES)
                    # A large cut one is paho's too: it reads it in parts, where we would copy it whole per part.
                    if (self._rpos < len(self._rbuf) and not wanted) or wanted > READ_CHUNK or not self._fill():
                        break
                if len(out) > taken:  # what paho notes per packet read, for its keepalive
                    with self._msgtime_mutex:
                        self._last_bytes_received = mqtt.time_func()
                if len(out) >= FRAME_MESSAGES:
                    return False  # a frame's worth: the rest of the buffer at the next call
            return self._rpos < len(self._rbuf) or self._lost is not None or bool(self._in_packet["command"])

    return BufferedClient


class _Session:
    """One MQTT session, served by a thread of its own that alone touches its paho client: it reads
    a burst of packets and forwards their messages as one frame, without handing them to another
    thread (a hand-off per message, and the GIL convoy that comes with it, halved the rate)."""

    def __init__(self, child: _Child, name: str, spec: dict):
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.mqtt = mqtt
        self.child = child
        self.name = name
        self.subscriptions = list(spec["subscriptions"])
        self.epoch = 0
        self.connected = False
        self.closing = False
        self.pending: list[tuple] = []  # messages read and not yet forwarded
        self.commands: collections.deque = collections.deque()  # (method, args) for the session's thread
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.broker = b = spec["broker"]
        self.where = f"{b['host']}:{b['port']}"
        # Stable id, persistent session, manual acks: what the broker holds for us survives our crash.
        # MQTT 5 for its Receive Maximum: the broker may have that many QoS 1 messages unacknowledged
        # with us (mosquitto gives 3.1.1 clients 20), so one store transaction covers many.
        client = _buffered_client(mqtt)(CallbackAPIVersion.VERSION2, client_id=spec["client_id"],
                                        protocol=mqtt.MQTTv5, manual_ack=True)
        if b.get("username"):
            client.username_pw_set(b["username"], b.get("password") or None)
        if b.get("tls"):
            client.tls_set(ca_certs=b.get("ca_file") or None, certfile=b.get("cert_file") or None,
                           keyfile=b.get("key_file") or None, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._subscribing = None
        self._came_up = False  # the current connection was accepted
        self._adding: dict[int, list[str]] = {}  # subscribe() mid -> its topics
        self.props = Properties(PacketTypes.CONNECT)
        self.props.SessionExpiryInterval = spec["session_expiry_s"]
        self.props.ReceiveMaximum = spec["receive_maximum"]
        self.client = client
        self.thread = threading.Thread(target=self._run, name=f"rtk-qos-receiver-{name}", daemon=True)
        self.thread.start()

    # -- called from the command thread

    def do(self, method, *args) -> None:
        self.commands.append((method, args))
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # woken already

    def close(self) -> None:
        self.closing = True
        self.do(lambda: None)
        self.thread.join(10)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the session's thread

    def _run(self) -> None:
        delay = 1.0
        while not self.closing:
            self.client.discard_buffer()
            self._came_up = False
            try:
                self.client.connect(self.broker["host"], self.broker["port"], self.broker.get("keepalive_s", 30),
                                    clean_start=False, properties=self.props)
            except (OSError, ValueError) as exc:
                log.warning("%s: cannot connect to %s: %s", self.name, self.where, exc)
            else:
                self._serve()
                if self._came_up:  # a refused connection backs off; a lost one retries soon
                    delay = 1.0
            if not self.closing:
                self._pause(delay)
                delay = min(delay * 2, 30.0)
        if self.connected:
            self.client.disconnect()  # nothing pending acknowledged: the broker keeps it for the next owner
            self.connected = False
            self.child.write(("d", self.name, "closed"))

    def _pause(self, seconds: float) -> None:
        """Wait before a reconnect; commands still run (a close ends the wait)."""
        deadline = time.monotonic() + seconds
        while not self.closing and (left := deadline - time.monotonic()) > 0:
            select.select([self._wake_r], [], [], left)
            self._run_commands()

    def _run_commands(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while self.commands:
            method, args = self.commands.popleft()
            method(*args)

    def _serve(self) -> None:
        """Until the connection is lost or the session closed."""
        client, ok = self.client, self.mqtt.MQTT_ERR_SUCCESS
        sock = client.socket()
        while True:
            self._run_commands()
            if self.closing:
                return
            # Our read buffer, and TLS's decrypted bytes, are data that select() cannot see.
            if client.socket() is None:  # a command's write found the connection lost: paho closed it
                return
            buffered = client.buffered() or (getattr(sock, "pending", None) and sock.pending())
            readable, writable, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [], [],
                                                  0 if buffered else 1.0)
            if (buffered or sock in readable) and not self._read_burst():
                return
            if writable and client.want_write() and client.loop_write() != ok:
                return
            if client.loop_misc() != ok:  # keepalive
                return

    def _read_burst(self) -> bool:
        """Read packets while they come, forwarding their messages a frame at a time."""
        client, ok = self.client, self.mqtt.MQTT_ERR_SUCCESS
        idle = 0
        while idle < 2:  # one read without a message may have been another packet (an ack, a ping)
            count = len(self.pending)
            if client.take_publishes(self.pending) and client.loop_read() != ok:
                self._forward()
                return False
            idle = idle + 1 if len(self.pending) == count else 0
            if len(self.pending) >= FRAME_MESSAGES:
                self._forward()
        self._forward()
        return True

    def _forward(self) -> None:
        if self.pending:
            self.child.write(("m", self.name, self.epoch, self.pending))
            self.pending = []

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.warning("%s: broker %s refused the connection: %s", self.name, self.where, reason_code)
            return
        self.epoch = self.child.next_epoch()
        self.connected = self._came_up = True
        log.info("%s: connected to %s", self.name, self.where)
        if self.subscriptions:  # up once the broker has them: what is published after that reaches us
            _rc, self._subscribing = client.subscribe([(t, self.mqtt.SubscribeOptions(qos=1))
                                                       for t in self.subscriptions])
        else:
            self.child.write(("u", self.name, self.epoch))

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _props) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.warning("%s: broker %s refused subscriptions: %s", self.name, self.where, ", ".join(refused))
        if mid == self._subscribing:
            self.child.write(("u", self.name, self.epoch))
        elif mid in self._adding:
            self.child.write(("s", self.name, self._adding.pop(mid)))

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        if self.connected:
            self._forward()  # what this connection brought goes before the news that it is gone
            self.connected = False
            self.child.write(("d", self.name, str(reason_code)))

    def _on_message(self, _client, _userdata, msg) -> None:
        self.pending.append((msg.topic, msg.payload, msg.qos, msg.mid))

    def ack(self, epoch: int, mids: list[int]) -> None:
        if epoch != self.epoch or not self.connected:
            return  # that connection is gone: the broker sends those messages again on this one
        for mid in mids:
            self.client.ack(mid, 1)

    def subscribe(self, topics: list[str]) -> None:
        self.subscriptions += [t for t in topics if t not in self.subscriptions]
        if self.connected:
            _rc, mid = self.client.subscribe([(t, self.mqtt.SubscribeOptions(qos=1)) for t in topics])
            self._adding[mid] = list(topics)

    def unsubscribe(self, topics: list[str]) -> None:
        self.subscriptions = [t for t in self.subscriptions if t not in topics]
        if self.connected:
            self.client.unsubscribe(list(topics))

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc not in (self.mqtt.MQTT_ERR_SUCCESS, self.mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s: %s", topic, self.mqtt.error_string(info.rc))


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG): %s (the command pipe's EOF still ends us)",
                    os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description="rtk-qos controller's MQTT receiver (started by the controller)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--parent", type=int, required=True)
    ns = parser.parse_args()
    logging.basicConfig(level=ns.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _die_with_parent(ns.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    # Frames leave on a private copy of stdout; fd 1 becomes stderr, so a stray print cannot corrupt them.
    out = os.dup(1)
    os.dup2(2, 1)
    child = _Child(out)
    frames = _Frames()
    while True:
        data = os.read(0, READ_CHUNK)
        if not data:  # the parent closed the pipe or died
            child.close_all()
            return 0
        for item in frames.feed(data):
            child.command(item)


if __name__ == "__main__":
    sys.exit(main())
