"""The receiver's own PUBLISH splitting (receiver.split_publishes, BufferedClient.take_publishes)
on mosquitto's real bytes: small and large payloads (remaining lengths of 1 to 3 bytes, larger
than a read), QoS 0 and 1 mixed, MQTT 5 properties, a topic in multi-byte UTF-8; the stream cut
at every place around each packet's header and end, and the same messages through the receiver
process."""
import select
import socket
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_harness import Controller
from rtk_qos.controller.receiver import READ_CHUNK, Batch, Receiver, Up, split_publishes

TOPICS = ("frames/a", "frames/日本/é", "frames/" + "x" * 300)  # the last one's length is above 255
# Payload sizes about the remaining length's 1/2 and 2/3-byte steps, and a read's size; the test
# broker takes packets up to 2 MB.
SIZES = (0, 1, 100, 117, 118, 127, 128, 269, 16_380, 16_384, READ_CHUNK - 10, READ_CHUNK + 10, 1_900_000)


def _messages() -> list[tuple[str, bytes, int]]:
    """(topic, payload, qos): every size in both QoS, on the three topics in turn."""
    out = []
    for i, size in enumerate(SIZES):
        for qos in (0, 1):
            out.append((TOPICS[(2 * i + qos) % 3], bytes((i * 7 + qos + j) % 256 for j in range(min(size, 256)))
                        * (size // 256) + bytes(size % 256), qos))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _read_packet(sock: socket.socket) -> bytes:
    """One whole packet of the control flow (CONNACK, SUBACK), byte by byte: nothing after it is taken."""
    head = sock.recv(1)
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return head + body


def _raw_subscriber(port: int, topic: str) -> socket.socket:
    """An MQTT 5 subscriber in plain bytes, so the test holds exactly what mosquitto sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    client_id = b"test-frames-raw"
    sock.sendall(_packet(0x10, b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + len(client_id).to_bytes(2, "big") + client_id))
    assert _read_packet(sock)[0] == 0x20
    sock.sendall(_packet(0x82, b"\x00\x01\x00" + len(topic).to_bytes(2, "big") + topic.encode() + b"\x01"))
    assert _read_packet(sock)[0] == 0x90
    return sock


def _publish_all(port: int) -> Controller:
    publisher = Controller(port, mqtt5=True)
    for n, (topic, payload, qos) in enumerate(_messages()):
        props = Properties(PacketTypes.PUBLISH)
        if n % 3 == 0:  # properties of every kind's length, which the splitter skips
            props.UserProperty = [("k", "v" * n)]
            props.MessageExpiryInterval = 600
            props.ContentType = "application/octet-stream"
        publisher.client.publish(topic, payload, qos=qos, properties=props).wait_for_publish(10)
    return publisher


def test_publishes_split_from_mosquittos_stream_cut_anywhere_and_through_the_receiver(broker):
    expected = _messages()
    assert sum(qos for *_, qos in expected) <= 20  # mosquitto's in-flight window: none held back unacknowledged
    raw = _raw_subscriber(broker.plain_port, "frames/#")
    receiver = Receiver("warning")
    receiver.start()
    publisher = None
    try:
        receiver.open("s", {"host": "127.0.0.1", "port": broker.plain_port, "keepalive_s": 30},
                      "test-frames-receiver", ["frames/#"], 600, 100)
        events: list = []
        while not any(isinstance(e, Up) for e in events):
            assert select.select([receiver.fileno()], [], [], 10)[0]
            events += receiver.read()
        publisher = _publish_all(broker.plain_port)

        stream, got = b"", []
        deadline = time.monotonic() + 20
        while len(got) < len(expected):
            assert time.monotonic() < deadline, f"{len(got)} of {len(expected)} messages"
            stream += raw.recv(1 << 20)
            got = []
            split_publishes(stream, 0, True, got)
        assert [(t, p, q) for t, p, q, _mid in got] == expected
        assert [mid for *_, q, mid in got if not q] == [0] * (len(expected) // 2)
        mids = [mid for *_, q, mid in got if q]
        assert len(set(mids)) == len(mids) and 0 not in mids
        assert split_publishes(stream, 0, True, []) == (len(stream), 0)

        # Where each packet ends: the shortest prefix that yields it.
        ends = []
        for i in range(len(expected)):
            low, high = ends[-1] if ends else 0, len(stream)
            while low < high:
                middle = (low + high) // 2
                if len(_split(stream, 0, middle)[2]) > i:
                    high = middle
                else:
                    low = middle + 1
            ends.append(low)
        assert ends[-1] == len(stream)
        assert split_publishes(stream, 0, True, [], 3) == (ends[2], 0)  # a frame's worth, and no more
        for i, (start, end) in enumerate(zip([0] + ends[:-1], ends)):
            # Cut in the fixed header, the topic, the packet id, the properties, the payload's start and at the end.
            for cut in sorted({*range(start + 1, min(end, start + 340)), *range(max(start + 1, end - 4), end + 1)}):
                pos, wanted, out = _split(stream, start, cut)
                if cut == end:
                    assert (pos, wanted, out) == (end - start, 0, got[i:i + 1])
                    continue
                assert (pos, out) == (0, []), cut
                assert cut - start < wanted <= end - start, cut
                if cut - start >= 5:  # the fixed header is whole: the packet's own size
                    assert wanted == end - start, cut

        # The receiver process: the same messages (those above a read's size through paho's parsing).
        received = []
        while len(received) < len(expected):
            assert select.select([receiver.fileno()], [], [], max(0.0, deadline - time.monotonic()))[0], received[-1:]
            for event in receiver.read():
                if isinstance(event, Batch):
                    received += event.messages
                    receiver.ack(event.link, [mid for *_, q, mid in event.messages if q])
        assert [(t, bytes(p), q) for t, p, q, _mid in received] == expected
    finally:
        receiver.stop()
        raw.close()
        if publisher is not None:
            publisher.close()


def _split(stream: bytes, start: int, cut: int) -> tuple[int, int, list]:
    """What one read holding stream[start:cut] yields."""
    out: list = []
    pos, wanted = split_publishes(stream[start:cut], 0, True, out)
    return pos, wanted, out
