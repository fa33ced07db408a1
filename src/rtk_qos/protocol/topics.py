"""RTK MQTT v1 topic names: rtk/v1/{tenant}/{site}/{device_id}/{message_type}[/{sub_type}]."""
from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "rtk/v1"
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$")
DEVICE_ID = re.compile(r"^[a-f0-9]{12}$")
TOPIC_MAX = 256  # reply_to from the wire: far below MQTT's 65535, above any sane topic


class TopicError(ValueError):
    pass


@dataclass(frozen=True)
class Topics:
    tenant: str
    site: str
    device_id: str
    group_ids: tuple = ()

    def __post_init__(self):
        for label, value, pattern in (("tenant", self.tenant, NAME), ("site", self.site, NAME),
                                      ("device_id", self.device_id, DEVICE_ID)):
            if not pattern.match(value):
                raise TopicError(f"{label} {value!r} does not match {pattern.pattern}")
        for group in self.group_ids:
            if not NAME.match(group):
                raise TopicError(f"group id {group!r} does not match {NAME.pattern}")

    @property
    def base(self) -> str:
        return f"{PREFIX}/{self.tenant}/{self.site}/{self.device_id}"

    def of(self, message_type: str) -> str:
        return f"{self.base}/{message_type}"

    @property
    def cmd_req(self) -> str:
        return self.of("cmd/req")

    @property
    def cmd_ack(self) -> str:
        return self.of("cmd/ack")

    @property
    def cmd_res(self) -> str:
        return self.of("cmd/res")

    def shared_requests(self, broadcast: bool) -> list[str]:
        topics = [f"{PREFIX}/{self.tenant}/{self.site}/group/{g}/cmd/req" for g in self.group_ids]
        if broadcast:
            topics += [f"{PREFIX}/{self.tenant}/broadcast/cmd/req", f"{PREFIX}/broadcast/cmd/req"]
        return topics


def check_reply_topic(topic) -> str:
    """A topic a request asks replies to go to: a plain topic name, no wildcards."""
    if not isinstance(topic, str):
        raise TopicError(f"expected a topic string, got {type(topic).__name__}")
    if not topic or len(topic.encode()) > TOPIC_MAX:
        raise TopicError(f"topic must be 1-{TOPIC_MAX} bytes")
    if any(c in topic for c in "+#\0\n\r") or topic.startswith("$"):
        raise TopicError(f"{topic[:40]!r} is not a publishable topic (wildcard, control character or $-prefixed)")
    return topic


@dataclass(frozen=True)
class Uplink:
    """Where an uplink message came from: rtk/v1/{tenant}/{site}/{device_id}/{message_type}[/{sub_type}]."""
    tenant: str
    site: str
    device_id: str
    message_type: str  # "state", "lwt", "telemetry/network", "evt/qos_alert", "cmd/ack", ...


def parse_uplink(topic: str) -> Uplink | None:
    """The parts of a device topic, or None for anything else (group and broadcast topics, foreign names)."""
    parts = topic.split("/", 5)
    if len(parts) < 6 or f"{parts[0]}/{parts[1]}" != PREFIX:
        return None
    tenant, site, device_id, rest = parts[2], parts[3], parts[4], parts[5]
    if not (NAME.match(tenant) and NAME.match(site) and DEVICE_ID.match(device_id)):
        return None
    return Uplink(tenant, site, device_id, rest)
