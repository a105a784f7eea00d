"""workers/access_log: the JSON lines (every field, hostile paths), the worker context spliced
into each line, the request's own end time, the bounded buffer, the timer and the last flush
when the flush task ends, the level policy and a failing stream. A real structlog set-up
writes to the same stream in one test: lines of both kinds stay in order."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog
import trio
import trio.testing

from gateway.logs import LogSink, configure_logging
from workers.access_format import TimestampText
from workers.access_log import AccessLog
from workers.http1.context import RequestRecord

FIELDS = {
    "listener",
    "client",
    "method",
    "path",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "backend",
    "error",
    "front",
    "back",
    "timestamp",
    "event",
    "level",
}


@pytest.fixture(autouse=True)
def _context() -> Iterator[None]:
    structlog.contextvars.bind_contextvars(worker=3, generation=7, cpu=1, pid=4242)
    yield
    structlog.contextvars.clear_contextvars()


def _record(path: str = "/", status: int = 200, error: str | None = None) -> RequestRecord:
    return RequestRecord(
        "web",
        "GET",
        path,
        status,
        5,
        1234,
        0.0123456,
        "10.0.0.1:80",
        "192.0.2.9",
        error,
        "h1",
        "h2",
    )


def _sink(level: int = logging.INFO) -> tuple[io.StringIO, LogSink]:
    out = io.StringIO()
    return out, LogSink(out, level, "json")


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    # Not splitlines(): it also splits at U+2028, which JSON carries raw inside strings.
    return [json.loads(line) for line in out.getvalue().split("\n") if line]


def test_every_field_and_the_worker_context_in_each_line() -> None:
    out, sink = _sink()
    t = iter([1_764_946_436.25, 1_764_946_437.0009])
    log = AccessLog(enabled=True, sink=sink, clock=lambda: next(t))
    log.append(_record("/a"))
    log.append(_record("/b", 502, "connect_refused"))
    log.flush()
    first, second = _lines(out)
    assert set(first) == FIELDS | {"worker", "generation", "cpu", "pid"}
    assert first == {
        "worker": 3,
        "generation": 7,
        "cpu": 1,
        "pid": 4242,
        "listener": "web",
        "client": "192.0.2.9",
        "method": "GET",
        "path": "/a",
        "status": 200,
        "bytes_in": 5,
        "bytes_out": 1234,
        "duration_ms": 12.346,
        "backend": "10.0.0.1:80",
        "error": None,
        "front": "h1",
        "back": "h2",
        "timestamp": "2025-12-05T14:53:56.250Z",
        "event": "access",
        "level": "info",
    }
    assert (second["path"], second["status"], second["error"]) == ("/b", 502, "connect_refused")
    assert second["timestamp"] == "2025-12-05T14:53:57.000Z"


def test_hostile_paths_stay_one_valid_line_each() -> None:
    out, sink = _sink()
    log = AccessLog(enabled=True, sink=sink)
    paths = ['/"q"\\', "/nl\n{", "/ctl\x00\x1b", "/é\u2028", '/\n{"worker":1}']
    for p in paths:
        log.append(_record(p))
    log.flush()
    lines = _lines(out)
    assert [line["path"] for line in lines] == paths
    assert all(line["worker"] == 3 for line in lines)  # the context splice hit only line starts


def test_a_context_the_line_cannot_carry_as_fields_is_spliced_in_instead() -> None:
    # A bound name that is also a line field, or no Python name at all: the context cannot
    # be the line class's fields, so each line gets it spliced in front (as structlog's
    # own JSON would carry both). A later flush under the usual context uses fields again.
    for extra in ({"status": "bound"}, {"not a name": 1}):
        structlog.contextvars.bind_contextvars(**extra)
        out, sink = _sink()
        log = AccessLog(enabled=True, sink=sink)
        log.append(_record('/\n{"x":1}'))
        log.append(_record("/b"))
        log.flush()
        lines = _lines(out)
        assert [line["path"] for line in lines] == ['/\n{"x":1}', "/b"]
        assert all(line["worker"] == 3 and line["pid"] == 4242 for line in lines)
        structlog.contextvars.unbind_contextvars(*extra)
        log.append(_record("/c"))
        log.flush()
        (last,) = _lines(out)[2:]
        assert last["path"] == "/c" and last["worker"] == 3 and last["status"] == 200


def test_timestamp_is_the_requests_end_in_utc_to_the_millisecond() -> None:
    stamp = TimestampText()
    for wall_s in (0.0, 1_764_946_436.9995, 1_764_946_437.0004, 1_764_946_437.0004, 951_782_400.5):
        expected = datetime.fromtimestamp(wall_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert stamp(wall_s) == expected


def test_buffer_is_bounded_and_written_when_full() -> None:
    out, sink = _sink()
    log = AccessLog(enabled=True, sink=sink, max_buffered=4)
    for i in range(3):
        log.append(_record(f"/{i}"))
    assert out.getvalue() == "" and log.pending() == 3
    log.append(_record("/3"))
    assert [line["path"] for line in _lines(out)] == ["/0", "/1", "/2", "/3"]
    assert log.pending() == 0


async def test_timer_writes_and_the_last_flush_when_the_task_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out, sink = _sink()
    log = AccessLog(enabled=True, sink=sink, flush_interval_s=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.serve_flush)
        log.append(_record("/timer"))
        await trio.sleep(4.9)
        assert out.getvalue() == ""  # still buffered
        await trio.sleep(0.2)
        assert [line["path"] for line in _lines(out)] == ["/timer"]
        log.append(_record("/last"))
        nursery.cancel_scope.cancel()  # a drain or stop ends the task before its next tick
    assert [line["path"] for line in _lines(out)] == ["/timer", "/last"]


def test_level_above_info_silences_it_as_before() -> None:
    out, sink = _sink(logging.WARNING)
    log = AccessLog(enabled=True, sink=sink)
    log.append(_record())
    log.flush()
    assert out.getvalue() == "" and log.pending() == 0 and not log.enabled


def test_a_failing_stream_is_counted_and_never_raised() -> None:
    out, sink = _sink()
    log = AccessLog(enabled=True, sink=sink, max_buffered=1)
    out.close()
    log.append(_record())  # full buffer: written at once, into a closed stream
    assert log.write_errors == 1 and log.pending() == 0


def test_lines_keep_their_order_with_structlog_events_on_one_stream() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("json", "info", stream=stream, env={})
        events = structlog.get_logger("t")
        log = AccessLog(enabled=True)  # the sink configure_logging set
        events.info("before_access")
        log.append(_record("/mid"))
        log.flush()
        events.info("after_access")
        stream.flush()
        lines = [json.loads(line) for line in raw.getvalue().decode().splitlines()]
        assert [line["event"] for line in lines] == ["before_access", "access", "after_access"]
        assert lines[1]["worker"] == 3 and lines[1]["path"] == "/mid"
    finally:
        configure_logging("json", "info", env={})  # the sink back on stderr
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(
    ("duration_s", "text"),
    [
        (0.0, "0.0"),
        (0.000123456, "0.123"),
        (0.0001235, "0.124"),  # half up
        (0.012345678, "12.346"),
        (1.5, "1500.0"),
        (3600.0000004, "3600000.0"),
        (-0.0005, "-0.5"),  # a clock that went back is written, never raised on
        (float("inf"), "null"),
        (float("nan"), "null"),
    ],
)
def test_duration_is_milliseconds_to_the_microsecond(duration_s: float, text: str) -> None:
    out, sink = _sink()
    log = AccessLog(enabled=True, sink=sink)
    record = _record("/")
    record.duration_s = duration_s
    log.append(record)
    log.flush()
    assert out.getvalue().split('"duration_ms":')[1].split(",")[0] == text
