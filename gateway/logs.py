"""Structured logging set-up (structlog) and the per-event rate limiter.

Owns how log events are rendered (JSON lines in production, the console renderer on a
TTY), the level policy (`LOG_LEVEL` in the environment wins over the configured level, so
an operator can turn on debug without editing the config), the event-name convention and
`RateLimitedLog`. It must never open files or sockets (it writes to the stream it is
given, stderr by default), never read the config file, and never be called per request
except by the access log.

Event-name convention: the `event` is a stable snake_case name of something that happened
(`worker_exited`, `upstream_connect_failed`), never a sentence; variable data goes in
fields; context (generation, cpu, pid, conn id) is bound once per scope with
`structlog.contextvars.bind_contextvars` or `log.bind`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

LogFormat = Literal["json", "console", "auto"]

EVENT_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class LogSink:
    """Where `configure_logging` sends lines, at which level, rendered how: what a writer
    that bypasses structlog for speed (the access log) needs to land in the same place."""

    stream: TextIO
    level: int
    rendering: Literal["json", "console"]


_sink = LogSink(sys.stderr, logging.INFO, "json")


def current_sink() -> LogSink:
    """The sink of the last `configure_logging` (stderr, info, JSON before any)."""
    return _sink


class LogConfigError(ValueError):
    """An unknown log level or format was asked for."""


class LogEventNameError(ValueError):
    """An event name broke the snake_case convention (only raised in strict mode)."""


def is_event_name(name: str) -> bool:
    return EVENT_NAME_RE.fullmatch(name) is not None


def resolve_level(level: str | None, env: Mapping[str, str]) -> int:
    name = (env.get("LOG_LEVEL") or level or "info").strip().lower()
    try:
        return _LEVELS[name]
    except KeyError:
        raise LogConfigError(f"unknown log level {name!r}; expected one of {sorted(_LEVELS)}")


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "console"]:
    if fmt == "json":
        return "json"
    if fmt == "console":
        return "console"
    if fmt != "auto":
        raise LogConfigError(f"unknown log format {fmt!r}; expected json, console or auto")
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def _json_serializer(obj: Any, **_: Any) -> str:
    return msgspec.json.encode(obj, enc_hook=repr).decode()


def _check_event_name(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event = event_dict.get("event")
    if not isinstance(event, str) or not is_event_name(event):
        raise LogEventNameError(f"log event {event!r} is not a snake_case event name")
    return event_dict


def configure_logging(
    fmt: LogFormat = "auto",
    level: str | None = "info",
    *,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    strict_event_names: bool = False,
) -> None:
    """Configure structlog and route stdlib logging (trio, h2, aioquic) through the same
    renderer. Safe to call again (tests, reload of the log level)."""
    global _sink
    out = stream if stream is not None else sys.stderr
    level_no = resolve_level(level, os.environ if env is None else env)
    rendering = resolve_format(fmt, out)
    _sink = LogSink(out, level_no, rendering)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if strict_event_names:
        shared.insert(0, _check_event_name)
    renderer: Processor
    if rendering == "json":
        # A string traceback without locals: locals may hold tokens or request data.
        shared += [structlog.processors.format_exc_info]
        renderer = structlog.processors.JSONRenderer(serializer=_json_serializer)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=True, exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)


class _Window:
    __slots__ = ("emitted", "event", "level", "started_at", "suppressed")

    def __init__(self, started_at: float, event: str, level: int) -> None:
        self.started_at = started_at
        self.emitted = 0
        self.suppressed = 0
        self.event = event
        self.level = level


OVERFLOW_KEY = "__overflow__"


class RateLimitedLog:
    """At most `max_per_window` lines per key per `window_s`; the rest are counted and
    reported by one `log_suppressed` line when the key's window ends (on its next event
    or on `flush()`, which the owner should call periodically, e.g. every `window_s`).

    The key defaults to the event name; pass `key=` to limit per peer or per listener.
    Past `max_keys` live keys, new keys share one `__overflow__` budget.
    """

    def __init__(
        self,
        logger: FilteringBoundLogger,
        *,
        max_per_window: int = 5,
        window_s: float = 60.0,
        max_keys: int = 1024,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_window < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("max_per_window, window_s and max_keys must be positive")
        self._log = logger
        self.max_per_window = max_per_window
        self.window_s = window_s
        self.max_keys = max_keys
        self._now = now
        self._windows: MutableMapping[str, _Window] = {}

    def debug(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.log(logging.DEBUG, event, key=key, **fields)

    def info(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.log(logging.INFO, event, key=key, **fields)

    def warning(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.log(logging.WARNING, event, key=key, **fields)

    def error(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.log(logging.ERROR, event, key=key, **fields)

    def log(self, level: int, event: str, *, key: str | None = None, **fields: Any) -> bool:
        """Emit or count one event; True when it was emitted."""
        now = self._now()
        k = event if key is None else key
        window = self._windows.get(k)
        if window is not None and now - window.started_at >= self.window_s:
            self._summarise(k, window)
            window = None
            del self._windows[k]
        if window is None:
            if len(self._windows) >= self.max_keys:
                self.flush()
            if len(self._windows) >= self.max_keys:
                k = OVERFLOW_KEY
                window = self._windows.get(k)
            if window is None:
                window = self._windows[k] = _Window(now, event, level)
        if window.emitted < self.max_per_window:
            window.emitted += 1
            self._log.log(level, event, **fields)
            return True
        window.suppressed += 1
        window.event = event
        window.level = max(window.level, level)
        return False

    def flush(self) -> int:
        """Close every window that has ended; returns how many summary lines were written."""
        now = self._now()
        written = 0
        for k in [k for k, w in self._windows.items() if now - w.started_at >= self.window_s]:
            written += self._summarise(k, self._windows.pop(k))
        return written

    def _summarise(self, key: str, window: _Window) -> int:
        if not window.suppressed:
            return 0
        self._log.log(
            window.level,
            "log_suppressed",
            suppressed_event=window.event,
            suppressed_key=key,
            suppressed_count=window.suppressed,
            window_s=self.window_s,
        )
        return 1
