"""A token bucket shared by all DeviceManagerService calls, like edgecore's (1/s, burst 100)."""

from __future__ import annotations

import time


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self.rejected = 0

    def try_take(self) -> bool:
        if self.wait_time() == 0.0:
            return True
        self.rejected += 1
        return False

    def wait_time(self) -> float:
        """Take a token and return 0 if one is there; otherwise the seconds until one will be (none taken)."""
        if self.level() >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def level(self) -> float:
        """The tokens there now (none taken)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def refund(self) -> None:
        """Give back a token taken for a call that was not made."""
        self._tokens = min(self.burst, self._tokens + 1)


def parse_rate(text: str) -> tuple[float, int]:
    """``"1:100"`` -> (1.0, 100): requests per second and burst."""
    try:
        rate_s, burst_s = text.split(":", 1)
        return float(rate_s), int(burst_s)
    except ValueError:
        raise ValueError(f"rate limit {text!r} is not RATE:BURST, e.g. 1:100 (edgecore's)") from None
