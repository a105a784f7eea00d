"""The per-record part of writing a batch of access lines, compiled (tools/build_native):
the timestamp text of each request's end and one line object per record.

Interpreted, building a batch's line objects cost about a microsecond per request, a third
of what the access log adds to a proxied request (issue 18: the shipped defaults within
1.15x of the like-for-like configuration). The line class itself (a msgspec Struct, which
mypyc cannot compile) stays in ``workers.access_log`` and is passed in.

Owns: ``TimestampText`` and ``lines_of``. Must never format on the request path (only
``AccessLog.flush`` calls it) or raise for a record's content.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from workers.http1.context import RequestRecord


class TimestampText:
    """ISO 8601 UTC text with milliseconds ("2026-12-05T14:53:56.123Z"), cached: the text of
    one millisecond is formatted once (a busy worker finishes many requests in one), the
    date-and-seconds part once per second (nginx caches its time strings the same way)."""

    def __init__(self) -> None:
        self._ms = -1
        self._second = -1
        self._text = ""
        self._second_text = ""

    def __call__(self, wall_s: float) -> str:
        ms = int(wall_s * 1000)
        if ms != self._ms:
            self._ms = ms
            second, milli = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._text = f"{self._second_text}.{milli:03d}Z"
        return self._text


def _milliseconds(duration_s: float) -> float:
    """A duration in milliseconds to the microsecond, rounded half up: what ``round(ms, 3)``
    gives except on exact ties, at half its cost (``round`` of a float to digits formats it
    to decimal and back)."""
    if 0.0 <= duration_s < 1e9:
        return int(duration_s * 1_000_000.0 + 0.5) / 1000
    return round(duration_s * 1000, 3)  # negative, huge, inf or nan: never raises


def lines_of(
    records: list[RequestRecord],
    finished_at: list[float],
    stamp: TimestampText,
    line: Callable[..., object],
) -> list[object]:
    """One ``line(...)`` per record, its fields in the access line's order."""
    out: list[object] = []
    for i in range(len(records)):
        r = records[i]
        out.append(
            line(
                r.listener,
                r.client,
                r.method,
                r.path,
                r.status,
                r.bytes_in,
                r.bytes_out,
                _milliseconds(r.duration_s),
                r.backend_id,
                r.error_kind,
                r.front,
                r.back,
                stamp(finished_at[i]),
            )
        )
    return out
