"""Passive health (outlier detection): eject a backend after consecutive failures.

Owns, per backend, the consecutive-failure streak, failure totals by kind, the
ejection count and the ejection deadline. Workers call `record` after each
attempt; selection asks `is_ejected` / `ejected_flags`. It must never read a
clock, sleep or schedule: `now` (monotonic seconds) is passed in, and
`next_deadline` tells the caller when eligibility next changes on its own.

Rules:
- Failures are connect errors, timeouts and 5xx answers (the caller decides which
  5xx statuses count; 502/503/504 are the usual choice). Every kind counts toward
  one streak; totals are kept per kind for metrics. A success resets the streak.
- When the streak reaches `consecutive_failures`, the backend is ejected for
  `base_ejection_s * 2 ** (n - 1)` capped at `max_ejection_s`, n being its
  ejection count including this one; the streak restarts at zero.
- The ejection count decays by one for every `ejection_decay_s` the backend spends
  not ejected (Envoy decrements its multiplier the same way).
- At most `max_ejection_percent` % of the backends (rounded down, but at least one
  when the percentage is > 0; 0 disables ejection) are ejected at once; an
  ejection over the cap is refused and retried on the next failure.
- Attempts recorded while a backend is ejected (in-flight requests, panic mode)
  update totals only: an ejected backend is not re-judged until it returns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FailureKind(enum.Enum):
    CONNECT_ERROR = "connect_error"
    TIMEOUT = "timeout"
    HTTP_5XX = "http_5xx"


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    consecutive_failures: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: int = 50
    ejection_decay_s: float = 60.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("outlier consecutive_failures must be >= 1")
        if not 0.0 < self.base_ejection_s <= self.max_ejection_s:
            raise ValueError("outlier ejection times need 0 < base_ejection_s <= max_ejection_s")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("outlier max_ejection_percent must be within 0..100")
        if not self.ejection_decay_s > 0.0:
            raise ValueError("outlier ejection_decay_s must be > 0")


@dataclass(frozen=True, slots=True)
class Ejected:
    index: int
    kind: FailureKind
    until: float
    ejection_count: int


@dataclass(frozen=True, slots=True)
class EjectionRefused:
    """The streak reached the threshold but the ejection cap is full."""

    index: int
    kind: FailureKind
    ejected_now: int
    cap: int


@dataclass(slots=True)
class _BackendOutlier:
    streak: int = 0
    ejections: int = 0
    ejected_until: float | None = None
    decay_from: float | None = None  # start of the current not-ejected period
    totals: dict[FailureKind, int] = field(default_factory=lambda: dict.fromkeys(FailureKind, 0))


class OutlierDetector:
    """Outlier state for one backend list, by index."""

    __slots__ = ("_backends", "cap", "settings")

    def __init__(self, count: int, settings: OutlierSettings | None = None) -> None:
        self.settings = settings or OutlierSettings()
        self._backends = [_BackendOutlier() for _ in range(count)]
        pct = self.settings.max_ejection_percent
        self.cap = 0 if pct == 0 else max(1, count * pct // 100)

    def _settle(self, b: _BackendOutlier, now: float) -> None:
        """Apply the ejection-count decay accrued up to `now`."""
        if b.ejections == 0 or b.decay_from is None:
            return
        if b.ejected_until is not None and now < b.ejected_until:
            return
        decay_s = self.settings.ejection_decay_s
        steps = int((now - b.decay_from) // decay_s)
        if steps > 0:
            b.ejections = max(0, b.ejections - steps)
            b.decay_from += steps * decay_s

    def _ejected_count(self, now: float) -> int:
        return sum(
            1 for b in self._backends if b.ejected_until is not None and now < b.ejected_until
        )

    def record(
        self, index: int, ok: bool, kind: FailureKind | None, now: float
    ) -> Ejected | EjectionRefused | None:
        """Record one attempt's outcome; `kind` is required when `ok` is False."""
        b = self._backends[index]
        if not ok:
            if kind is None:
                raise ValueError("a failure needs its FailureKind")
            b.totals[kind] += 1
        if b.ejected_until is not None and now < b.ejected_until:
            return None
        if ok:
            b.streak = 0
            return None
        assert kind is not None
        b.streak += 1
        settings = self.settings
        if b.streak < settings.consecutive_failures:
            return None
        ejected_now = self._ejected_count(now)
        if ejected_now >= self.cap:
            return EjectionRefused(index, kind, ejected_now, self.cap)
        self._settle(b, now)
        b.ejections += 1
        duration_s = min(
            settings.base_ejection_s * 2.0 ** (b.ejections - 1), settings.max_ejection_s
        )
        b.ejected_until = now + duration_s
        b.decay_from = b.ejected_until
        b.streak = 0
        return Ejected(index, kind, b.ejected_until, b.ejections)

    def is_ejected(self, index: int, now: float) -> bool:
        until = self._backends[index].ejected_until
        return until is not None and now < until

    def ejected_until(self, index: int) -> float | None:
        """The end of the backend's latest ejection (possibly past), None if never ejected."""
        return self._backends[index].ejected_until

    def ejected_flags(self, now: float) -> list[bool]:
        return [b.ejected_until is not None and now < b.ejected_until for b in self._backends]

    def ejection_count(self, index: int, now: float) -> int:
        """The ejection count after decay up to `now` (drives the next ejection's length)."""
        b = self._backends[index]
        self._settle(b, now)
        return b.ejections

    def failure_totals(self, index: int) -> dict[FailureKind, int]:
        return dict(self._backends[index].totals)

    def next_deadline(self, now: float) -> float | None:
        """The earliest ejection end after `now`: when eligibility next changes by itself."""
        ends = [
            b.ejected_until
            for b in self._backends
            if b.ejected_until is not None and now < b.ejected_until
        ]
        return min(ends) if ends else None
