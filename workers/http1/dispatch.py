"""Runs one HTTP/1.1 client connection's coroutine on this run's dispatcher
(``workers.readiness``) instead of as a trio task's own code, and hands it to trio and back.

The connection's trio task (its *owner*: the worker's per-connection task) creates the
coroutine, queues it on the dispatcher (its first step runs in the dispatcher's next batch, so
the first request's writes are held with the batch's others, like every later request's), then
parks in trio for as long as the coroutine is resident:
the dispatcher resumes it directly on every event it waits for (one trio wakeup per batch of
events for all connections, issue 18). When the coroutine reaches code that needs trio (a
cancel scope, a nursery, a fresh upstream dial, an error answer, a WebSocket tunnel, a
streamed upload, TLS) it first yields TO_TRIO (``if DRIVING.mode == RESIDENT: await
trap(TO_TRIO)``, written out at each such place: compiled, the mode test costs nothing and a
helper coroutine would be created on every request): the dispatcher wakes the owner, which
from then on drives the coroutine itself with a trampoline (each trio trap the coroutine
yields is passed up to trio, trio's answer passed back down) until the coroutine yields
TO_DISPATCHER (``if DRIVING.mode == HANDED``; only where no trio scope of its own is open:
the keep-alive loop's top, after a fresh dial) or ends.

Deadlines and drain need nothing new: the owner parks inside the connection's cancel scope
(``ClientConnection.life``), so a lapse, a drain's idle close or the worker's cut cancels the
owner's park; its abort takes the coroutine off the dispatcher and the owner throws trio's
Cancelled into it, exactly where it waited, as trio would have.

Interpreted on purpose (tools/build_native leaves it out): ``trap`` must be a
``types.coroutine`` generator, and ``drive`` awaits inside ``except`` blocks.
Owns: the owner's side (``drive``) and ``trap``.
Must never be used for a stream whose socket is not registered with the run's Readiness.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any

import outcome
import trio

from workers.readiness import (
    DETACHED,
    DRIVING,
    FINISHED,
    HANDED,
    OFF,
    TO_DISPATCHER,
    Driven,
    Readiness,
    abort_resident,
)


@types.coroutine
def trap(code: int) -> Generator[int, None, None]:
    """Yield ``code`` (see ``workers.readiness``) to the driver of this coroutine."""
    yield code


@types.coroutine
def _forward(value: Any) -> Generator[Any, Any, Any]:
    """Pass a trio trap the driven coroutine yielded up to trio; trio's answer comes back."""
    return (yield value)


async def drive(readiness: Readiness, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` as a resident coroutine of ``readiness``'s dispatcher, owned by the
    calling task; return when it returns, raise what it raises. The caller's cancellation
    reaches the coroutine where it waits, as trio's Cancelled."""
    d = Driven(coro, trio.lowlevel.current_task())
    readiness.park_soon(d)  # its first step runs in the dispatcher's next batch
    await drive_from(readiness, d, None)


async def drive_from(readiness: Readiness, d: Driven, move: object) -> None:
    """Own ``d`` from its move ``move`` on (None: it is resident, wait for the dispatcher):
    the rest of ``drive``, also for a task that adopts a coroutine started without one
    (``workers/http1/taskless.py``). The calling task becomes its owner."""
    d.owner = trio.lowlevel.current_task()
    coro = d.coro
    abort = abort_resident(readiness, d)
    if isinstance(move, outcome.Error):
        move.unwrap()  # it raised while no task owned it: its exception is the owner's
    while True:
        thrown: BaseException | None = None
        if move is None:  # resident: park until the dispatcher needs us
            try:
                move = await trio.lowlevel.wait_task_rescheduled(abort)
            except BaseException as exc:
                if not d.detached:
                    raise  # the coroutine's own exception, from the dispatcher
                thrown = exc  # our cancellation: the abort took the coroutine back
        if move is FINISHED:
            return
        if move is DETACHED:
            # Cancelled while the dispatcher ran it: deliver the cancellation here.
            try:
                await trio.lowlevel.checkpoint()
            except BaseException as exc:
                thrown = exc
            move = None  # nothing to answer: a spurious wake at most (it waits again)
        # The trampoline: the coroutine runs in this task until it goes back or ends.
        pending: object = move
        while True:
            value: Any = None
            if thrown is None and not isinstance(pending, int) and pending is not None:
                try:
                    value = await _forward(pending)
                except BaseException as exc:
                    thrown = exc
            elif thrown is None and pending == TO_DISPATCHER:
                break
            # else: TO_TRIO, or the wait it was parked on when taken back (answered None:
            # a spurious wake, after which it reads again and waits through trio).
            DRIVING.mode = HANDED
            try:
                if thrown is not None:
                    error, thrown = thrown, None
                    pending = coro.throw(error)
                else:
                    pending = coro.send(value)
            except StopIteration:
                return
            finally:
                DRIVING.mode = OFF
        readiness.park_soon(d)
        move = None
