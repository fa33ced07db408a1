"""Layered settings shared by the agent and the controller: defaults < one TOML file <
environment < flags, every key typed by its default and every mistake named with its path."""
from __future__ import annotations

import tomllib
from typing import Any, Iterable, Mapping


class ConfigError(ValueError):
    pass


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}


def merge(base: dict, override: Mapping, where: str, from_text: bool = False) -> None:
    """Overlay `override` on `base` in place; an unknown key or a wrong type raises ConfigError."""
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"{where}{key}: unknown setting")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key}: expected a table")
            merge(base[key], value, f"{where}{key}.", from_text)
        else:
            base[key] = _coerce(base[key], value, f"{where}{key}", from_text)


def _coerce(default: Any, value: Any, where: str, from_text: bool) -> Any:
    """TOML and flags give typed values; the environment gives text, parsed by the default's type."""
    expected = _TYPE_NAMES.get(type(default), type(default).__name__)
    if from_text and isinstance(value, str) and not isinstance(default, str):
        text = value.strip()
        try:
            if isinstance(default, bool):
                if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError
                return text.lower() in ("1", "true", "yes")
            if isinstance(default, int):
                return int(text)
            if isinstance(default, float):
                return float(text)
            if isinstance(default, list):
                return [part for part in text.split(",") if part]
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not {'an' if expected[0] in 'aeiou' else 'a'} {expected}") from None
    if (isinstance(default, bool) != isinstance(value, bool) or type(default) in (str, list) and not isinstance(
            value, type(default)) or isinstance(default, (int, float)) and not isinstance(value, (int, float))):
        raise ConfigError(f"{where}: expected {expected}, got {_TYPE_NAMES.get(type(value), type(value).__name__)}")
    if isinstance(default, float):
        return float(value)
    return value


def env_overrides(environ: Mapping[str, str], defaults: dict, prefix: str,
                  skip: Iterable[str] = ()) -> dict:
    """PREFIX_BROKER_HOST=x -> {"broker": {"host": "x"}}; PREFIX_TENANT=x -> {"tenant": "x"}.

    `skip`: full variable names or prefixes (ending in `_`) that belong to someone else."""
    skip = tuple(skip)
    out: dict = {}
    for name, value in environ.items():
        if not name.startswith(prefix) or name == prefix + "CONFIG" or name in skip or any(
                s.endswith("_") and name.startswith(s) for s in skip):
            continue
        key = name[len(prefix):].lower()
        if key in defaults and not isinstance(defaults[key], dict):  # DEVICE_ID is not device.id
            out[key] = value
            continue
        section = next((s for s, v in defaults.items() if isinstance(v, dict) and key.startswith(s + "_")), None)
        if section:
            out.setdefault(section, {})[key[len(section) + 1:]] = value
        else:
            out[key] = value
    return out


def read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
