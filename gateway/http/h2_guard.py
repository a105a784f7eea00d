"""Flood accounting for one HTTP/2 connection: the abuse the h2 library does not bound.

Owns the per-kind counters over a fixed window (client stream resets — rapid reset,
CVE-2023-44487 —, PINGs, SETTINGS, empty DATA frames, PRIORITY frames, streams we refused)
and the verdict: past a kind's threshold within ``flood_window_s`` the connection is closed
with GOAWAY ENHANCE_YOUR_CALM. The h2 library itself bounds CONTINUATION backlogs (64
frames), header lists (HPACK ``max_header_list_size``) and flow-control violations; it
acknowledges every PING and SETTINGS frame and accepts any number of resets, empty DATA and
PRIORITY frames, which is why this exists. Must never perform I/O; time is passed in.
"""

from __future__ import annotations

from typing import Final

from gateway.http.limits import H2Limits

RESET: Final = 0
PING: Final = 1
SETTINGS: Final = 2
EMPTY_DATA: Final = 3
PRIORITY: Final = 4
REFUSED: Final = 5
KIND_NAMES: Final = (
    "rapid_reset",
    "ping_flood",
    "settings_flood",
    "empty_data_flood",
    "priority_flood",
    "refused_flood",
)


class FloodGuard:
    def __init__(self, limits: H2Limits, now: float) -> None:
        self.window_s = limits.flood_window_s
        self.thresholds = [
            limits.max_resets_per_window,
            limits.max_pings_per_window,
            limits.max_settings_per_window,
            limits.max_empty_data_per_window,
            limits.max_priority_per_window,
            limits.max_refused_per_window,
        ]
        self.counts = [0, 0, 0, 0, 0, 0]
        self.window_start = now

    def hit(self, kind: int, now: float, count: int = 1) -> bool:
        """Count ``count`` events of ``kind``; True when the connection is over its threshold."""
        if now - self.window_start >= self.window_s:
            self.window_start = now
            self.counts = [0, 0, 0, 0, 0, 0]
        self.counts[kind] += count
        return self.counts[kind] > self.thresholds[kind]
