"""The one place that reads the process environment.

Every setting is read through `Env`, with its development default next to it in settings.py.
Reading through one typed reader means a bad value ("DEBUG=yes please") fails at start-up
instead of becoming a silent bug.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Env:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def str(self, name: str, default: str) -> str:
        return self._environ.get(name, default)

    def bool(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false).")

    def int(self, name: str, default: int) -> int:
        raw = self._environ.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from exc

    def float(self, name: str, default: float) -> float:
        raw = self._environ.get(name)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from exc

    def list(self, name: str, default: list[str]) -> list[str]:
        raw = self._environ.get(name)
        if raw is None:
            return list(default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def dict(self, name: str, default: dict[str, str]) -> dict[str, str]:
        """`key=value,key=value` (an empty value removes the key's default)."""
        raw = self._environ.get(name)
        if raw is None:
            return dict(default)
        pairs = {}
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ImproperlyConfigured(f"{name}={raw!r}: {item!r} is not key=value.")
            pairs[key.strip()] = value.strip()
        return {key: value for key, value in pairs.items() if value}
