"""DeadlineWatch: the deadlines of every HTTP/1.1 client connection of one listener in one
worker, kept in one heap and enforced by one task.

A connection's deadline (keep-alive idle, request head, the buffered exchange's steps) is a
LazyDeadline: plain floats the hot path moves with two attribute writes. The watch holds at
most one current heap entry per deadline (its ``wake_at``); an entry is pushed only when the
deadline moves earlier than that wake, so a keep-alive connection costs a push about once per
timeout period, not per request. When an entry comes due the watch reads the deadline afresh:
lapsed, it marks it and calls its ``on_lapse``: the connection's scope's ``cancel``, or, for a
connection started without a task (``workers/http1/taskless.py``), what cancels it and gives
it one (every lapse ends the connection, which answers with
``exchange_steps.lapse_error(step)``); moved later, it pushes the new time.
Superseded and retired entries stay in the heap until they come due or a prune drops them.

One task per listener instead of a task, a nursery and a sleeping cancel scope per connection
(about 4 KiB of every idle keep-alive connection, issue 18).

Owns: LazyDeadline, the heap, its task (a trio system task started with the first
connection of a run) and closing idle keep-alives at drain. Must never perform I/O, and never
raise out of its task (a system task's exception would end the worker's whole run).
"""

from __future__ import annotations

import contextvars
import heapq
import math
from collections.abc import Callable
from typing import Final

import trio

from workers.http1.exchange_steps import KEEPALIVE_IDLE, TOTAL, UNWATCHED

# Superseded entries are dropped in one pass once they are this many and half the heap.
_PRUNE_MIN: Final = 256

_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop


class LazyDeadline:
    """One connection's current deadline as plain floats, enforced by its listener's watch.

    Moving it later costs nothing more (the watch reads the new time when the old wake comes
    due); moving it earlier than the pending wake pushes a heap entry. On a lapse the watch
    sets ``lapsed`` and calls ``on_lapse`` (which cancels the connection's whole life).
    """

    __slots__ = ("at", "lapsed", "now", "on_lapse", "seq", "step", "total_at", "wake_at", "watch")

    def __init__(
        self, now: Callable[[], float], watch: DeadlineWatch, on_lapse: Callable[[], None]
    ) -> None:
        self.now = now
        self.watch = watch
        self.on_lapse = on_lapse
        self.at = math.inf
        self.step = UNWATCHED
        self.total_at = math.inf
        self.lapsed = False
        self.wake_at = math.inf  # when this deadline's current heap entry comes due (none: inf)
        self.seq = 0  # that entry's sequence number (0: none)

    def set(self, at: float, step: int) -> None:
        self.at = at
        self.step = step
        if at < self.wake_at:
            self.watch.schedule(self, at)

    def arm(self, timeout_s: float, step: int) -> None:
        """An exchange step's deadline, capped by the request's total."""
        at = self.now() + timeout_s
        if at >= self.total_at:
            at, step = self.total_at, TOTAL
        self.set(at, step)

    def retire(self) -> None:
        """The connection is done: its pending entry (if any) no longer counts."""
        superseded = self.seq
        self.seq = 0
        self.wake_at = math.inf
        if superseded:
            self.watch.supersede()


class DeadlineWatch:
    """The heap of one listener's connection deadlines in this run, and its task."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        # (wake time, sequence number, deadline); an entry is current while its number is
        # the deadline's ``seq``.
        self.heap: list[tuple[float, int, LazyDeadline]] = []
        self.next_seq = 1
        self.stale = 0  # superseded or retired entries still in the heap
        # While the task sleeps: when it wakes, and the scope whose deadline that is.
        # -inf while it runs (it reads the heap before it sleeps again).
        self.sleep_at = -math.inf
        self.sleep_scope: trio.CancelScope | None = None
        self.root: trio.lowlevel.Task | None = None
        self.failures = 0

    def start(self) -> None:
        """Run the task in the current trio run (as a system task: it never outlives it)."""
        self.root = trio.lowlevel.current_root_task()
        # In the starting task's context (the worker's bound log fields): a lapse may start
        # a connection's task from here (workers/http1/taskless.py), which inherits it.
        trio.lowlevel.spawn_system_task(
            self.run, name="h1 deadline watch", context=contextvars.copy_context()
        )

    def runs_here(self) -> bool:
        return self.root is not None and self.root is trio.lowlevel.current_root_task()

    def schedule(self, d: LazyDeadline, at: float) -> None:
        """Wake for ``d`` at ``at`` (earlier than its pending wake, if any)."""
        superseded = d.seq
        seq = self.next_seq
        self.next_seq = seq + 1
        d.seq = seq
        d.wake_at = at
        _heappush(self.heap, (at, seq, d))
        if at < self.sleep_at:
            self.sleep_at = at
            scope = self.sleep_scope
            assert scope is not None
            scope.deadline = at
        if superseded:
            self.supersede()

    def supersede(self) -> None:
        """One entry of the heap no longer counts; prune when they are half of it."""
        self.stale += 1
        stale = self.stale
        if stale >= _PRUNE_MIN and stale * 2 >= len(self.heap):
            self.heap = [e for e in self.heap if e[1] == e[2].seq]
            heapq.heapify(self.heap)
            self.stale = 0

    def expire(self, now: float) -> None:
        """Handle every entry due by ``now``: cancel the lapsed, re-push the moved."""
        while self.heap and self.heap[0][0] <= now:
            _, seq, d = _heappop(self.heap)
            if seq != d.seq:
                self.stale -= 1
                continue
            d.seq = 0
            d.wake_at = math.inf
            at = d.at
            if at <= now:
                d.lapsed = True
                d.on_lapse()
            elif at < math.inf:
                self.schedule(d, at)

    def close_idle_by(self, at: float) -> None:
        """Drain: every connection idle between requests closes by ``at`` at the latest."""
        idle = [e[2] for e in self.heap if e[1] == e[2].seq and e[2].step == KEEPALIVE_IDLE]
        for d in idle:
            if d.at > at:
                d.set(at, KEEPALIVE_IDLE)

    async def run(self) -> None:
        while True:
            try:
                self.expire(self.now())
            except Exception:  # a bug here must not end the worker's run: the entry is dropped
                self.failures += 1
            heap = self.heap
            at = heap[0][0] if heap else math.inf
            with trio.CancelScope(deadline=at) as scope:
                self.sleep_scope = scope
                self.sleep_at = at
                try:
                    await trio.sleep_forever()
                finally:
                    self.sleep_at = -math.inf
                    self.sleep_scope = None
