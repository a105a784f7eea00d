"""The steps of one proxied exchange, their moving deadline, and what a lapse of each means.

Owns: the step ids, StepTimer (one cancel scope per task whose deadline moves with each step,
capped by the request's total deadline; the other form, LazyDeadline, is deadline_watch's),
the typed error a lapsed or broken step stands for (``lapse_error``), and the two exchange
errors the connection tells apart (StaleConnection, ClientGone). Must never perform I/O or decide retries (``upstream`` does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

import trio

from gateway.http.errors import BadGateway, GatewayTimeout, HttpError, RequestTimeout
from workers.readiness import DRIVING


class StaleConnection(BadGateway):
    """A reused upstream connection died before it produced any response byte."""

    kind = "stale_connection"


class ClientGone(HttpError):
    status = 400
    kind = "client_abort"


# What a lapsed step deadline (or a broken stream during that step) means; see lapse_error.
UP_HEAD_WRITE = 0
UP_BODY_WRITE = 1
CLIENT_CONTINUE = 2
CLIENT_BODY_IDLE = 3
RESPONSE_HEAD = 4
UP_BODY_IDLE = 5
CLIENT_WRITE = 6
TOTAL = 7  # the request's total_timeout_ms, which bounds every step
# Connection states a LazyDeadline also covers (never an exchange's step).
KEEPALIVE_IDLE = 8  # no byte of the next request yet: a lapse closes without a word
REQUEST_HEAD = 9  # a request head is arriving: a lapse is 408
UNWATCHED = 10  # nothing for the deadline watch (a shape with its own StepTimers, a tunnel)


_perf_counter: Final = time.perf_counter
_driving: Final = DRIVING


class SystemTime:
    """What trio's ``SystemClock.current_time`` computes (its fixed offset plus
    ``perf_counter()``: the same sum, so the same readings), compiled: a proxied request
    reads the clock several times, and the clock's own method is interpreted Python.

    Inside a dispatcher batch (``workers.readiness``) the reading is the batch's start: the
    batch read the clock once for all its requests (about seven readings each, ~2% of a
    request's cost, issue 18), as nginx's and HAProxy's event loops do. A time taken there
    is early by at most how long the batch has run (a batch handles at most 256 events
    before the next one reads the clock again): durations and deadlines are exact to that."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def __call__(self) -> float:
        if _driving.batch is not None:
            return self.offset + _driving.batch_at
        return self.offset + _perf_counter()


def clock_now() -> Callable[[], float]:
    """The running trio clock's ``current_time`` (one call per read where
    ``trio.current_time`` makes three; a compiled ``SystemTime`` for trio's default clock);
    ``trio.current_time`` itself outside a run."""
    try:
        clock = trio.lowlevel.current_clock()
    except RuntimeError:
        return trio.current_time
    offset = getattr(clock, "offset", None)
    if type(clock).__name__ == "SystemClock" and type(offset) is float:
        return SystemTime(offset)
    return clock.current_time  # another clock (tests' MockClock): its own method


class StepTimer:
    """One cancel scope per task whose deadline moves with each step, capped by the total.

    Entering and leaving a scope per send and per receive (plus one for the total timeout)
    cost more than the proxying itself; moving one deadline is a heap push. ``step``
    remembers which error a lapse means: the step's own, or TOTAL when the total deadline
    is the nearer one.
    """

    __slots__ = ("scope", "step", "total_at")

    def __init__(self, total_at: float, step: int, timeout_s: float = math.inf) -> None:
        # Born armed for its first step: a deadline set before the scope is entered costs
        # nothing extra.
        deadline = trio.current_time() + timeout_s
        if deadline >= total_at:
            deadline, step = total_at, TOTAL
        self.scope = trio.CancelScope(deadline=deadline)
        self.step = step
        self.total_at = total_at

    def arm(self, timeout_s: float, step: int) -> None:
        deadline = trio.current_time() + timeout_s
        if deadline >= self.total_at:
            deadline, step = self.total_at, TOTAL
        self.scope.deadline = deadline
        self.step = step


def lapse_error(step: int, conn_reused: bool) -> HttpError:
    """The typed error of a step that timed out or whose stream broke (built only then)."""
    if step == UP_HEAD_WRITE:
        if conn_reused:
            return StaleConnection()
        return BadGateway("upstream write failed", kind="upstream_write")
    if step == UP_BODY_WRITE:
        return BadGateway("upstream write failed", kind="upstream_write")
    if step == CLIENT_CONTINUE:
        return ClientGone()
    if step == CLIENT_BODY_IDLE:
        return RequestTimeout("request body idle", kind="body_timeout")
    if step == RESPONSE_HEAD:
        return GatewayTimeout("upstream response head timed out", kind="head_timeout")
    if step == UP_BODY_IDLE:
        return GatewayTimeout("upstream body idle", kind="upstream_body_timeout")
    if step == TOTAL:
        return GatewayTimeout("total request time exceeded", kind="total_timeout")
    return ClientGone("client write failed", kind="client_write")
