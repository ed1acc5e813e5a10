"""API_TOKEN_RATE_LIMIT's format, read once by the settings (so a typo fails at start) and by the
rate limit. No Django imports: imageflow/settings.py imports it."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    requests: int
    window_seconds: int


def parse_rate(text: str) -> Rate | None:
    """`600/min`, `10/s`, `5000/hour`, `100/5min`; empty or `0/...`: no limit. Anything else is
    an error when settings load (tests/foundation/test_settings.py)."""
    if not text or not text.strip():
        return None
    match = _RATE.match(text.lower())
    if match is None or match.group(3) not in _UNITS:
        raise ValueError(f"API_TOKEN_RATE_LIMIT: expected '<requests>/<period>' such as '600/min', got {text!r}")
    unit = _UNITS[match.group(3)]
    requests = int(match.group(1))
    return Rate(requests=requests, window_seconds=int(match.group(2) or 1) * unit) if requests else None
