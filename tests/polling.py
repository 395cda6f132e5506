"""Waiting in tests for something another thread or process does."""
from __future__ import annotations

import time


def wait_until(pred, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Whether ``pred()`` became true within ``timeout`` seconds (asked every ``interval``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
