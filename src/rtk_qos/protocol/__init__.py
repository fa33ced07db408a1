"""RTK MQTT v1: everything the wire contract says lives in this package."""
from .argspec import ARGS, ArgError, validate
from .errors import ERROR_CODES, CommandError

__all__ = ["ARGS", "ArgError", "CommandError", "ERROR_CODES", "validate"]
