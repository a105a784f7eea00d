"""gateway.logs: rendering, level policy, event names, and the rate limiter (injected clock)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gateway.logs import (
    LogConfigError,
    LogEventNameError,
    RateLimitedLog,
    configure_logging,
    is_event_name,
    resolve_format,
    resolve_level,
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line]


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_with_level_filter_and_stdlib_bridge() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf, env={})
    log = structlog.get_logger()
    log.info("worker_exited", pid=42, signal="SIGKILL")
    log.debug("too_chatty")
    logging.getLogger("h2.connection").warning("window %d exhausted", 7)
    lines = _lines(buf)
    assert [line["event"] for line in lines] == ["worker_exited", "window 7 exhausted"]
    assert lines[0]["pid"] == 42 and lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[1]["logger"] == "h2.connection" and lines[1]["level"] == "warning"


def test_log_level_env_wins_over_configured_level() -> None:
    buf = io.StringIO()
    configure_logging("json", "warning", stream=buf, env={"LOG_LEVEL": "DEBUG"})
    structlog.get_logger().debug("probe_sent", backend="b1")
    assert [line["event"] for line in _lines(buf)] == ["probe_sent"]
    assert resolve_level(None, {}) == logging.INFO
    with pytest.raises(LogConfigError):
        resolve_level("loud", {})


def test_auto_format_follows_the_tty() -> None:
    assert resolve_format("auto", _TTY()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _TTY()) == "json"
    with pytest.raises(LogConfigError):
        resolve_format("xml", io.StringIO())
    tty = _TTY()
    configure_logging("auto", "info", stream=tty, env={})
    structlog.get_logger().info("config_loaded", path="/etc/eg.toml")
    out = tty.getvalue()
    assert "config_loaded" in out and "path" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_contextvars_are_merged() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf, env={})
    structlog.contextvars.bind_contextvars(generation=3, cpu=1)
    try:
        structlog.get_logger().info("worker_ready")
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = _lines(buf)
    assert line["generation"] == 3 and line["cpu"] == 1


def test_event_name_convention() -> None:
    assert is_event_name("upstream_connect_failed")
    for bad in ("Upstream failed", "upstreamFailed", "_x", "x__y", "x_", ""):
        assert not is_event_name(bad)
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf, env={}, strict_event_names=True)
    structlog.get_logger().info("fine_event")
    with pytest.raises(LogEventNameError):
        structlog.get_logger().info("Something went wrong")


def test_rate_limiter_caps_then_summarises() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf, env={})
    clock = _Clock()
    rl = RateLimitedLog(structlog.get_logger(), max_per_window=3, window_s=10.0, now=clock)
    emitted = [rl.warning("upstream_connect_failed", backend="b1") for _ in range(10)]
    assert emitted == [True] * 3 + [False] * 7
    assert len(_lines(buf)) == 3
    clock.t += 9.9
    assert rl.warning("upstream_connect_failed") is False  # still inside the window
    clock.t += 0.1
    assert rl.warning("upstream_connect_failed", backend="b2") is True  # new window
    lines = _lines(buf)
    summary = lines[3]
    assert summary["event"] == "log_suppressed"
    assert summary["suppressed_event"] == "upstream_connect_failed"
    assert summary["suppressed_count"] == 8
    assert summary["level"] == "warning"
    assert lines[4]["event"] == "upstream_connect_failed" and lines[4]["backend"] == "b2"


def test_rate_limiter_keys_are_independent_and_flush_reports_quiet_keys() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf, env={})
    clock = _Clock()
    rl = RateLimitedLog(structlog.get_logger(), max_per_window=1, window_s=5.0, now=clock)
    assert rl.error("accept_failed", key="web") is True
    assert rl.error("accept_failed", key="api") is True
    assert rl.error("accept_failed", key="web") is False
    assert rl.error("accept_failed", key="web") is False
    assert rl.flush() == 0  # windows still open
    clock.t += 5.0
    assert rl.flush() == 1  # only "web" suppressed anything
    summary = _lines(buf)[-1]
    assert summary["suppressed_key"] == "web" and summary["suppressed_count"] == 2
    assert rl.flush() == 0  # said once, not again


def test_rate_limiter_key_table_is_bounded() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf, env={})
    clock = _Clock()
    rl = RateLimitedLog(
        structlog.get_logger(), max_per_window=1, window_s=5.0, max_keys=2, now=clock
    )
    assert rl.info("peer_reset", key="10.0.0.1") is True
    assert rl.info("peer_reset", key="10.0.0.2") is True
    # Table full: new peers share the overflow budget instead of growing the table.
    assert rl.info("peer_reset", key="10.0.0.3") is True
    assert rl.info("peer_reset", key="10.0.0.4") is False
    clock.t += 5.0
    assert rl.info("peer_reset", key="10.0.0.5") is True  # expired windows were pruned
