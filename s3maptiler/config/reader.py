"""Typed values from a mapping of strings (the environment over `.env`): each error is
a ConfigError whose one line names the variable."""

from __future__ import annotations

import re
from collections.abc import Mapping

from s3maptiler.config.model import ConfigError


class Reader:
    """Reads typed values from a mapping of strings; errors name the variable."""

    def __init__(self, values: Mapping[str, str]):
        self.values = values

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        if not re.fullmatch(r"[0-9]+", raw):
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
        value = int(raw)
        if not low <= value <= high:
            raise ConfigError(f"{name}: {value} is outside {low}..{high}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}: {value} is outside {low}..{high}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name, default)
        if raw not in choices:
            raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(choices)}")
        return raw
