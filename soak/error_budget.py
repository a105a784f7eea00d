"""Which client errors a chaos event explains, and which nothing explains.

Pure: the clients' per-interval error counts and the chaos events' windows in, a tally per
scenario out. An error is explained when its interval overlaps the window of an event whose
kind allows that error class (`chaos_schedule.ALLOWED_ERRORS`); every other error is
unexpected and fails the scenario's error verdict. It must never read files or judge trends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from soak.chaos_schedule import ALLOWED_ERRORS


@dataclass(frozen=True)
class EventWindow:
    seq: int
    kind: str
    start_s: float
    end_s: float  # when its consequences may no longer show


@dataclass
class ErrorTally:
    unexpected: dict[str, int] = field(default_factory=dict)
    allowed: dict[str, int] = field(default_factory=dict)
    by_event: dict[int, dict[str, int]] = field(default_factory=dict)
    first_unexpected_s: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.unexpected

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "unexpected": self.unexpected,
            "allowed": self.allowed,
            "by_event": {str(k): v for k, v in self.by_event.items()},
            "first_unexpected_s": self.first_unexpected_s,
        }


def _explaining(
    windows: Sequence[EventWindow], start_s: float, end_s: float, kind: str
) -> EventWindow | None:
    for w in windows:
        if w.start_s <= end_s and start_s <= w.end_s and kind in ALLOWED_ERRORS[w.kind]:
            return w
    return None


def tally(
    intervals: Sequence[tuple[float, float, Mapping[str, int]]],
    windows: Sequence[EventWindow],
) -> ErrorTally:
    """`intervals`: (start_s, end_s, {error class: count}) as a client reported them."""
    out = ErrorTally()
    for start_s, end_s, errors in intervals:
        for kind, n in errors.items():
            if n <= 0:
                continue
            w = _explaining(windows, start_s, end_s, kind)
            if w is None:
                out.unexpected[kind] = out.unexpected.get(kind, 0) + n
                if len(out.first_unexpected_s) < 10:
                    out.first_unexpected_s.append(round(end_s, 1))
            else:
                out.allowed[kind] = out.allowed.get(kind, 0) + n
                per = out.by_event.setdefault(w.seq, {})
                per[kind] = per.get(kind, 0) + n
    return out
