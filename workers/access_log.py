"""The access log: one structured event per HTTP request, buffered off the hot path.

The request path only appends a record to a list; a task flushes the list to the
`expressgateway.access` logger once a second (or when it holds `max_buffered`
records, the oldest are written first and nothing is dropped silently: a full
buffer is flushed synchronously at the next append).
"""

from __future__ import annotations

import structlog
import trio

from workers.http1.context import RequestRecord

FLUSH_INTERVAL_S = 1.0


class AccessLog:
    def __init__(self, *, enabled: bool, max_buffered: int = 1024) -> None:
        self.enabled = enabled
        self.max_buffered = max_buffered
        self._buffer: list[RequestRecord] = []
        self._log = structlog.get_logger("expressgateway.access")

    def append(self, record: RequestRecord) -> None:
        if not self.enabled:
            return
        self._buffer.append(record)
        if len(self._buffer) >= self.max_buffered:
            self.flush()

    def flush(self) -> None:
        records, self._buffer = self._buffer, []
        for r in records:
            self._log.info(
                "access",
                listener=r.listener,
                client=r.client,
                method=r.method,
                path=r.path,
                status=r.status,
                bytes_in=r.bytes_in,
                bytes_out=r.bytes_out,
                duration_ms=round(r.duration_s * 1000, 3),
                backend=r.backend_id,
                error=r.error_kind,
                front=r.front,
                back=r.back,
            )

    async def serve_flush(self) -> None:
        try:
            while True:
                await trio.sleep(FLUSH_INTERVAL_S)
                self.flush()
        finally:
            self.flush()
