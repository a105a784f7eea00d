"""Named run lengths: how long, how often to sample, how long to warm up, how often to
inject a fault. `ci` fits in the test suite (under 3 minutes with start and report);
`hour` and `day` are for a quiet machine or bare metal; `custom` is `hour`'s pacing with the
duration the operator gives. Plain data; it must never start anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    duration_s: float
    sample_s: float
    warmup_s: float  # not judged: pools fill, allocators grow, caches warm
    chaos_every_s: float
    backend_down_s: float  # how long a killed backend stays down
    flap_s: float  # how long a flapping backend stays unhealthy

    def with_duration(self, duration_s: float) -> Profile:
        """Another length with the same pacing; the warm-up stays at most a fifth of it."""
        return replace(self, duration_s=duration_s, warmup_s=min(self.warmup_s, duration_s / 5))

    @property
    def chaos_end_s(self) -> float:
        """No fault starts after this, so the last one's aftermath is sampled."""
        return self.duration_s - max(10.0, 0.08 * self.duration_s)


PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", 90.0, 2.0, 14.0, 8.0, 3.0, 2.0),
    "hour": Profile("hour", 3600.0, 5.0, 300.0, 60.0, 5.0, 5.0),
    "day": Profile("day", 86400.0, 15.0, 1800.0, 300.0, 10.0, 10.0),
    "custom": Profile("custom", 600.0, 5.0, 60.0, 30.0, 5.0, 5.0),
}
