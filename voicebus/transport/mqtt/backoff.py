"""The reconnect delay schedule: exponential, capped, shortened by random jitter."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, delay: float, max_delay: float, jitter: float) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0, 1, ...).

    ``min(max_delay, delay * 2**attempt)``, shortened by up to `jitter` (a fraction,
    clamped to 0..1) at random, so clients cut off together do not return together.
    """
    capped = min(max_delay, delay * 2 ** min(attempt, 30))
    jitter = min(max(jitter, 0.0), 1.0)
    return float(capped * (1.0 - jitter * random.random()))
