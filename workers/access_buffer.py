"""The request path's side of the access log (``workers.access_log``): each finished
request's record and the wall-clock time it finished, appended to two lists.

Compiled (tools/build_native): it runs once per request, called from compiled code, where a
call into an interpreted method costs several times the method's own work (issue 18).
Owns the two lists and their bound (a full buffer calls ``on_full``: the log writes it).
Must never format, write, or raise for a record.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.http1.context import RequestRecord


class AccessBuffer:
    __slots__ = ("clock", "finished_at", "max_buffered", "on_full", "records")

    def __init__(
        self, max_buffered: int, clock: Callable[[], float], on_full: Callable[[], None]
    ) -> None:
        self.max_buffered = max_buffered
        self.clock = clock
        self.on_full = on_full
        self.records: list[RequestRecord] = []
        self.finished_at: list[float] = []

    def append(self, record: RequestRecord) -> None:
        self.records.append(record)
        self.finished_at.append(self.clock())
        if len(self.records) >= self.max_buffered:
            self.on_full()

    def take(self) -> tuple[list[RequestRecord], list[float]]:
        """Everything buffered, in order; the buffer starts again empty."""
        records, finished_at = self.records, self.finished_at
        self.records, self.finished_at = [], []
        return records, finished_at
