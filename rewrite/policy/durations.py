"""Durations written the way admins write them: `365 days`, `1h`, `0s`, `1 day`."""
from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?|w|weeks?)\s*$", re.I)


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError naming the accepted forms otherwise."""
    m = _RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration (write e.g. 30 minutes, 1h, 365 days)")
    unit = m.group(2).lower()
    key = "m" if unit.startswith("mi") or unit == "m" else unit[0]
    return float(m.group(1)) * _UNITS[key]
