"""The access log: one JSON line per HTTP request, buffered and written in batches.

The request path only appends the request's record and the wall-clock time it finished
(two list appends, no formatting: the compiled ``workers.access_buffer``). A batch becomes
lines in one go: a msgspec Struct per record (its fields are the line's keys, in order;
built by the compiled ``workers.access_format.lines_of``) encoded by one precompiled encoder
call, the worker's bound log context (worker, generation, cpu, pid) as the line's last
members (fields of a Struct subclass made once per context, their values its defaults; a
context that cannot be fields is spliced in front of each line by one bytes replace), the
timestamp text (the request's end, to the millisecond) cached; then one write to the log
stream (`gateway.logs.current_sink`, stderr in a worker), the same place and the same JSON keys as
structlog's events. On a console sink (a TTY) lines go through structlog's renderer instead:
a human reads them, speed does not matter.

The buffer is bounded: it is written when it holds `max_buffered` records, every
`flush_interval_s` (observability.access_log_flush_ms) by `serve_flush`, when that task ends, and by the worker on its way out
(`Worker.run`, SIGTERM), so a request that finished before a drain or a stop is never lost.
Must never: format on the request path, or raise out of `append` / `flush` (a log stream
that fails is counted in `write_errors`, the worker keeps serving).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
import structlog
import trio

from gateway.logs import LogSink, current_sink
from workers.access_buffer import AccessBuffer
from workers.access_format import TimestampText, lines_of
from workers.http1.context import RequestRecord

FLUSH_INTERVAL_S = 0.25  # observability.access_log_flush_ms's default
MAX_BUFFERED = 256  # records; a full buffer is written at once (about 80 KiB, well under 1 ms)


class AccessLine(msgspec.Struct, gc=False):
    """One access-log line; the field order is the JSON key order."""

    listener: str
    client: str
    method: str
    path: str
    status: int
    bytes_in: int
    bytes_out: int
    duration_ms: float
    backend: str | None
    error: str | None
    front: str
    back: str
    timestamp: str
    event: str = "access"
    level: str = "info"


def _context_fields(encoder: msgspec.json.Encoder, context: dict[str, Any]) -> bytes:
    """The bound structlog context as JSON members ending in a comma (b"" when none)."""
    if not context:
        return b""
    return encoder.encode(context)[1:-1] + b","


def _line_with_context(context: dict[str, Any]) -> type[AccessLine] | None:
    """AccessLine with the context's members as last fields (their values the defaults);
    None when the context cannot be fields (a name a line already has, or not a name)."""
    if any(name in AccessLine.__struct_fields__ for name in context):
        return None
    try:
        fields = [(name, Any, msgspec.field(default=value)) for name, value in context.items()]
        line = msgspec.defstruct(
            "AccessLineWithContext", fields, bases=(AccessLine,), kw_only=True, gc=False
        )
        return cast("type[AccessLine]", line)
    except (TypeError, ValueError):
        return None


class AccessLog:
    def __init__(
        self,
        *,
        enabled: bool,
        max_buffered: int = MAX_BUFFERED,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        sink: LogSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink if sink is not None else current_sink()
        # Access lines are "info" events: a level above info silences them, as it did when
        # they went through structlog's filtering logger.
        self.enabled = enabled and self.sink.level <= logging.INFO
        self.flush_interval_s = flush_interval_s
        self.write_errors = 0  # batches the log stream refused (each one's lines are lost)
        # The request path appends here (compiled); ``append`` below is the same, checked.
        self.buffer = AccessBuffer(max_buffered, clock, self.flush)
        self._encoder = msgspec.json.Encoder(enc_hook=repr)
        self._timestamp = TimestampText()
        self._context_key: tuple[tuple[str, Any], ...] = ()
        self._context_line: type[AccessLine] = AccessLine

    def append(self, record: RequestRecord) -> None:
        if self.enabled:
            self.buffer.append(record)

    def pending(self) -> int:
        return len(self.buffer.records)

    def flush(self) -> None:
        if not self.buffer.records:
            return
        records, finished_at = self.buffer.take()
        if self.sink.rendering == "console":
            self._log_console(records, finished_at)
            return
        context = structlog.contextvars.get_contextvars()
        line = self._line_for(context)
        data = self._encoder.encode_lines(lines_of(records, finished_at, self._timestamp, line))
        if line is AccessLine and context:
            # A raw newline only ever ends a line (JSON escapes it inside strings), so every
            # b"\n{" is the start of the next line's object.
            members = _context_fields(self._encoder, context)
            data = (b"\n" + data).replace(b"\n{", b"\n{" + members)[1:]
        self._write(data)

    def _line_for(self, context: dict[str, Any]) -> type[AccessLine]:
        """The line class carrying ``context`` (made once per context; AccessLine itself when
        there is none or it cannot be fields)."""
        if not context:
            return AccessLine
        try:
            key = tuple(context.items())
            hash(key)
        except TypeError:  # an unhashable value: splice it in every time
            return AccessLine
        if key != self._context_key:
            self._context_key = key
            self._context_line = _line_with_context(context) or AccessLine
        return self._context_line

    def _write(self, data: bytes) -> None:
        stream = self.sink.stream
        try:
            raw = getattr(stream, "buffer", None)
            if raw is not None:
                stream.flush()  # structlog's lines already in the text layer go first
                raw.write(data)
                raw.flush()
            else:
                stream.write(data.decode())
                stream.flush()
        except (OSError, ValueError):  # ValueError: the stream was closed
            self.write_errors += 1

    def _log_console(self, records: list[RequestRecord], finished_at: list[float]) -> None:
        log = structlog.get_logger("expressgateway.access")
        for r, at in zip(records, finished_at, strict=True):
            log.info(
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
                finished_at=self._timestamp(at),
            )

    async def serve_flush(self) -> None:
        try:
            while True:
                await trio.sleep(self.flush_interval_s)
                self.flush()
        finally:
            self.flush()
