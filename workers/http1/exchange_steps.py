"""The steps of one proxied exchange, their moving deadline, and what a lapse of each means.

Owns: the step ids, the two deadline forms (StepTimer: one cancel scope per task whose
deadline moves with each step; LazyDeadline: plain floats the connection's watcher task
enforces), both capped by the request's total deadline, the typed error a lapsed or broken
step stands for (``lapse_error``), and the two exchange errors the connection tells apart
(StaleConnection, ClientGone). Must never perform I/O or decide retries (``upstream`` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from gateway.http.errors import BadGateway, GatewayTimeout, HttpError, RequestTimeout


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
UNWATCHED = 10  # nothing for the watcher (a shape with its own StepTimers, a tunnel)


def clock_now() -> Callable[[], float]:
    """The running trio clock's bound ``current_time`` (one call per read where
    ``trio.current_time`` makes three); ``trio.current_time`` itself outside a run."""
    try:
        return trio.lowlevel.current_clock().current_time
    except RuntimeError:
        return trio.current_time


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


class LazyDeadline:
    """One connection's current deadline as plain floats, enforced by its watcher task.

    Moving it is two attribute writes (a StepTimer's is a heap push, and entering a cancel
    scope per request cost more than the rest of a small proxied request). The watcher
    sleeps until ``wake_at``; when the deadline moves later nothing else happens (the watcher
    wakes, sees the new time and sleeps again), when it moves earlier ``wake_scope``'s
    deadline is pulled in. On a lapse the watcher sets ``lapsed`` and cancels the whole
    connection, which then answers with ``lapse_error(step)``: every lapse ends the
    connection, so no per-request scope is needed to tell a lapse from other cancellation.
    """

    __slots__ = ("at", "lapsed", "now", "step", "total_at", "wake_at", "wake_scope")

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.at = math.inf
        self.step = UNWATCHED
        self.total_at = math.inf
        self.lapsed = False
        self.wake_at = -math.inf  # the watcher is not asleep: it reads ``at`` before it sleeps
        self.wake_scope: trio.CancelScope | None = None

    def set(self, at: float, step: int) -> None:
        self.at = at
        self.step = step
        if at < self.wake_at:
            self.wake_at = at
            assert self.wake_scope is not None
            self.wake_scope.deadline = at

    def arm(self, timeout_s: float, step: int) -> None:
        """An exchange step's deadline, capped by the request's total."""
        at = self.now() + timeout_s
        if at >= self.total_at:
            at, step = self.total_at, TOTAL
        self.set(at, step)


# What an exchange step arms: either form has ``arm(timeout_s, step)``.
Timer = StepTimer | LazyDeadline


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
