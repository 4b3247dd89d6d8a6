"""Exponential backoff with full jitter, on the monotonic clock."""

from __future__ import annotations

import random


class Backoff:
    """``next()`` returns the delay before the next attempt; ``reset()`` after a success.

    Full jitter (a random delay in [cap/2, cap]) keeps a fleet of gateways from reconnecting in lockstep
    after a broker restart.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial = max(initial, 0.001)
        self.maximum = max(maximum, self.initial)
        self.factor = factor
        self._attempt = 0
        self._rng = random.Random()

    @property
    def attempts(self) -> int:
        return self._attempt

    def next(self) -> float:
        cap = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return cap / 2 + self._rng.random() * cap / 2

    def reset(self) -> None:
        self._attempt = 0
