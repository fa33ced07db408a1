"""The named error kinds of RTK MQTT v1 and the fixed integer codes sent for them.

The specification names errors (E_DEVICE_BUSY); the cmd.error schema wants an
integer 1000-9999. This table is the one mapping (RTK_MQTT_V1.md, inconsistency 4).
"""
from __future__ import annotations

ERROR_CODES: dict[str, int] = {
    "E_INVALID_COMMAND": 1001,
    "E_UNSUPPORTED_OPERATION": 1002,
    "E_INSUFFICIENT_PRIVILEGES": 1003,
    "E_DEVICE_BUSY": 1004,
    "E_TIMEOUT": 1005,
    "E_RESOURCE_UNAVAILABLE": 1006,
}

MESSAGE_MAX = 200
DETAILS_MAX = 500


class CommandError(Exception):
    """A command cannot run or failed, with the protocol's error kind."""

    def __init__(self, kind: str, message: str, details: str = ""):
        if kind not in ERROR_CODES:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details

    @property
    def code(self) -> int:
        return ERROR_CODES[self.kind]

    def as_payload(self) -> dict:
        """The `error` object of cmd.error/1.0, within the schema's length limits."""
        return {"code": self.code,
                "message": f"{self.kind}: {self.message}"[:MESSAGE_MAX],
                "details": self.details[:DETAILS_MAX]}
