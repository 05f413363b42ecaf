"""Exponential back-off for restarting crashed containers and for pulling images, as upstream's
kubelet keys it (`flowcontrol.Backoff`).

Per key: the first failure is retried at once and starts a delay of `base` (10 s); each retry
after that waits until `delay` has passed since the previous retry, and doubles the delay up
to `cap` (300 s). A key whose last retry is older than `reset` (10 min) starts over, so a
container that ran for ten minutes before crashing restarts at once again.

`remaining(key, since)` is upstream's IsInBackOffSince: an event at `since` (the container's
finish time) less than `delay` after the last retry must wait; the answer is how long from
now. Pure (the clock is injected) and unit tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    def __init__(self, base: float = 10.0, cap: float = 300.0, reset: float = 600.0,
                 clock: Callable[[], float] = time.time):
        self.base = base
        self.cap = cap
        self.reset = reset
        self.clock = clock
        self._entries: dict[tuple, tuple[float, float]] = {}  # key -> (delay, last retry)

    def delay(self, key: tuple) -> float:
        entry = self._entries.get(key)
        return entry[0] if entry else 0.0

    def remaining(self, key: tuple, since: float | None = None) -> float:
        """Seconds from now until `key` may be retried (0: now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        delay, last = entry
        now = self.clock()
        if now - last > self.reset:
            return 0.0
        since = now if since is None else since
        if since - last >= delay:
            return 0.0
        return max(0.0, last + delay - now)

    def next(self, key: tuple) -> float:
        """Record a retry now; the delay the next one will wait."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > self.reset:
            delay = self.base
        else:
            delay = min(entry[0] * 2, self.cap)
        self._entries[key] = (delay, now)
        return delay

    def forget(self, prefix: str) -> None:
        """Drop every key whose first element is `prefix` (a pod's uid)."""
        for key in [k for k in self._entries if k and k[0] == prefix]:
            del self._entries[key]
