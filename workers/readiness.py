"""Edge-triggered read readiness for the proxy's plain TCP sockets, and the dispatcher that
resumes HTTP/1.1 client connections without a trio wakeup each: one epoll per trio run and
one dispatcher task.

trio's ``wait_readable`` arms a one-shot registration per wait (an ``epoll_ctl`` call, a waiter
record built and torn down, two passes through its registration bookkeeping, all interpreted)
and proxying a small request waits twice. Here a socket is registered once, edge-triggered,
when its reader is made; a wait is a dict store and a park; the dispatcher, a trio system task
that trio wakes when the epoll fd is readable, handles each batch of events.

Two kinds of waiter. A trio task (``wait_readable``) is rescheduled: one trio wakeup per
event. A *resident* coroutine (a ``Driven``: an HTTP/1.1 client connection, see
``workers/http1/dispatch.py``) is resumed directly with ``coroutine.send`` inside the
dispatcher's own task: trio sees one wakeup per batch, not one per connection and event
(issue 18). A resident coroutine waits by yielding an int (see the codes below; trio's own
traps are objects) and must never touch trio's task machinery while resident (no cancel
scope, nursery, Event wait, sleep, checkpoint: they would bind to the dispatcher's task);
code that needs trio first yields ``TO_TRIO``, and the connection's owner task (parked in
trio while its coroutine is resident) drives it from there, until it yields
``TO_DISPATCHER``. ``DRIVING.mode`` tells the code which driver is running it. A coroutine
may also have no owner task (a connection started without one,
``workers/http1/taskless.py``): its ``Keeper`` then gets the moves an owner would, and
starts a task when one is needed; that it finished, it hears once the batch's held writes
went out.

Edge-triggered: an event reports new readiness only. An event that finds no waiter sets the
fd's ready flag (so does any event that reports the peer's end, waiter or not), and the next
wait on that fd is a plain checkpoint instead of a park; callers
read after every wait and wait again when the read finds nothing, so a stale flag costs one
extra read, never a lost wakeup. Registering a fd again (the kernel drops a closed socket from
the epoll, so a new socket may get the same number) replaces the old registration. A wait
for room to write (rare: a full send buffer) adds EPOLLOUT to the fd's registration.

Writes made by resident coroutines during a batch are held and written together when the
batch ends (``write_soon``), or once the first of them has waited ``_OUTBOX_WAIT_S``. A batch
goes on with the events that arrived while it ran (the peers' answers to earlier writes)
while its first held write is younger than that and trio's turn is not due. On loopback a
write also runs the peer's receive path and wakes the peer's process; a peer woken once per
batch instead of once per request costs a cross-CPU wakeup less per request (issue 18:
measured 12% of the worker's CPU at 32 keep-alive connections, 21% when clients reconnect
every 100 requests; waking a peer whose CPU idles costs the writer ~11 µs on this kind of
virtual machine), and longer batches wake the peers less often (bounded in time, not in
sockets: a bound of 16 sockets cut a batch of 32 connections in two, and each half woke both
peers). Bytes the kernel does not take at the batch's end stay *stalled* on their fd
(``settle`` writes them, the dispatcher too when the fd turns writable); every writer of the
proxy's sockets settles the fd before it writes itself (``workers/http1/socket_io.py``), and
a socket is settled before it is closed or shut down for writing (``serve_h1_connection``).
``notify_closing`` drops what is held for the fd.

Owns: the epoll, the waiting tasks and coroutines, the ready flags, the run-soon queue of
resident coroutines that yielded (a checkpoint's equivalent: the dispatcher lets trio run
between rounds), the driving mode. Must never read or write a socket, and never raise out
of its task (a coroutine's exception goes to its owner task). A task waiting here is woken
by an event, by cancellation (which is how the proxy ends connections: a resident
coroutine's owner, cancelled, takes its coroutine back, see ``detach``), or by
``notify_closing`` (call it before closing a registered socket: trio's own
``notify_closing`` only knows trio's waiters).
"""

from __future__ import annotations

import contextvars
import os
import select
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

import outcome
import trio

_REGISTER: Final = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
_REGISTER_WRITE: Final = _REGISTER | select.EPOLLOUT
# Peer data, peer close, hang-up and errors all wake a reader: its read then sees them.
_WAKES_READER: Final = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
# Room, hang-up and errors wake a writer: its write then sees them.
_WAKES_WRITER: Final = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
# An end (peer close, hang-up, error) also flags the fd even when it wakes a reader: a read
# that then gets the last bytes does not see the end behind them, and no later edge comes.
_ENDS: Final = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_MAX_EVENTS: Final = 256
# A batch writes what it holds once the first held write has waited _OUTBOX_WAIT_S (bounds
# the delay a response waits for the rest of a long batch; the age is checked each time
# another _OUTBOX_CHECK_FDS sockets hold writes), and holds a socket's writes only while
# they total at most _OUTBOX_BYTES (more goes out at once: a large body is not copied).
_OUTBOX_WAIT_S: Final = 0.0005
_OUTBOX_CHECK_FDS: Final = 16
_OUTBOX_BYTES: Final = 16384
# How long the dispatcher handles batches back to back (each one's events found by polling
# again at once, without a trio round) before it lets trio run its other tasks: a trio round
# costs a few µs, and trio's own work (accepting, a connection's start and end, timers)
# waits at most this long for its turn (measured: 8 batches per turn at saturation held a
# new keep-alive connection's first request ~30 ms at p99).
_SPIN_S: Final = 0.0002

# What a resident coroutine yields: 2*fd waits for fd to be readable, 2*fd+1 writable, or:
YIELD: Final = -1  # run me again after the others (a checkpoint)
TO_TRIO: Final = -2  # continue me in my owner task (trio code ahead)
TO_DISPATCHER: Final = -3  # (to the owner's trampoline) park me back on the dispatcher

# DRIVING.mode: who is running the code right now.
OFF: Final = 0  # an ordinary trio task
RESIDENT: Final = 1  # the dispatcher: yield the codes above, never a trio trap
HANDED: Final = 2  # a resident coroutine's owner task (trio traps; TO_DISPATCHER goes back)

# Bound once (compiled, each ``trio.lowlevel.X`` is two module attribute lookups).
_current_task: Final = trio.lowlevel.current_task
_park: Final = trio.lowlevel.wait_task_rescheduled
_reschedule: Final = trio.lowlevel.reschedule
_checkpoint: Final = trio.lowlevel.checkpoint
_shielded_checkpoint: Final = trio.lowlevel.cancel_shielded_checkpoint
_SUCCEEDED: Final = trio.lowlevel.Abort.SUCCEEDED
_FAILED: Final = trio.lowlevel.Abort.FAILED
_perf_counter: Final = time.perf_counter
_Value: Final = outcome.Value
_Error: Final = outcome.Error

_RUN_READINESS: trio.lowlevel.RunVar[Readiness] = trio.lowlevel.RunVar("eg_readiness")


class Driving:
    """Who runs the code now (``mode``); set only around a driver's ``send``/``throw``.
    ``batch``: the Readiness whose dispatcher is inside a batch (its resident coroutines'
    writes are held until the batch ends), else None; ``batch_at``: when that batch began
    (``perf_counter``), the time its coroutines read (``exchange_steps.SystemTime``).
    ``stalls``: how many fds, in this process, hold bytes a batch could not write (0: no
    writer needs to settle first)."""

    def __init__(self) -> None:
        self.mode = OFF
        self.batch: Readiness | None = None
        self.batch_at = 0.0
        self.stalls = 0


DRIVING: Final = Driving()


# The owner's messages from a resident coroutine's step (besides a handoff's yielded value).
FINISHED: Final = "finished"  # the coroutine returned
DETACHED: Final = "detached"  # the owner's cancellation took it back while it ran


class Keeper(Protocol):
    """Who takes a resident coroutine's moves while no trio task owns it (a connection the
    worker started without a task: ``workers/http1/taskless.py``)."""

    def on_move(self, move: object) -> None:
        """The coroutine's next move for its owner (see ``Readiness._step``); FINISHED comes
        after the batch's held writes went out. Must not raise."""


class Driven:
    """One resident coroutine and the trio task that owns it (parked while it is resident),
    or, while it has none (``owner`` None), its ``keeper``."""

    __slots__ = (
        "abort_pending",
        "coro",
        "detached",
        "keeper",
        "owner",
        "running",
        "ticket",
        "wait",
    )

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        owner: trio.lowlevel.Task | None,
        keeper: Keeper | None = None,
    ) -> None:
        self.coro = coro
        self.owner = owner
        self.keeper = keeper
        self.wait = -1  # the fd code it waits on (>= 0), or -1
        self.ticket = 0  # its current entry in the run-soon queue (0: none)
        self.running = False
        self.detached = False  # taken back by its owner: the dispatcher no longer resumes it
        self.abort_pending = False


def current_readiness() -> Readiness:
    """This trio run's Readiness, made (and its dispatcher started) on first use."""
    try:
        return _RUN_READINESS.get()
    except LookupError:
        readiness = Readiness()
        _RUN_READINESS.set(readiness)
        # In the context of the task that first needs it (not the run's start): resident
        # coroutines run in the dispatcher's task, and their logs carry what the worker
        # bound (worker id, pid) as a connection task's would.
        trio.lowlevel.spawn_system_task(
            readiness.dispatch, name="eg-readiness", context=contextvars.copy_context()
        )
        return readiness


def existing_readiness() -> Readiness | None:
    """This trio run's Readiness if anything made it, else None (never starts one)."""
    try:
        return _RUN_READINESS.get()
    except LookupError:
        return None


class Readiness:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, trio.lowlevel.Task] = {}
        self._ready: set[int] = set()
        self._coro_readers: dict[int, Driven] = {}
        self._coro_writers: dict[int, Driven] = {}
        # (coroutine, its ticket then, what to throw in): entries whose ticket moved on are
        # stale (it was resumed or taken back since).
        self._soon: list[tuple[Driven, int, BaseException | None]] = []
        self._tickets = 0
        # Writes held during a batch (fd -> bytes, in order per fd), and bytes a batch's end
        # could not write (the fd's registration then includes EPOLLOUT).
        self._outbox: dict[int, bytes] = {}
        self._held_at = 0.0  # when the outbox's first write was held
        self._stalled: dict[int, bytes] = {}
        # Queueing from another task while the dispatcher sleeps in trio wakes it through
        # this eventfd, registered in the epoll.
        self._sleeping = False
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        # Since this run began (tests read them): steps of resident coroutines that parked
        # here again, and those that handed their coroutine to its owner task.
        self.resumed = 0
        self.handoffs = 0
        # Trio traps a resident coroutine yielded (a path that should have gone to trio
        # first; its owner forwards them), and reschedules trio refused: bugs, counted.
        self.strays = 0
        self.failures = 0
        # Writes held for a batch's end, and those whose bytes then had to wait for room.
        self.held = 0
        self.stalled_writes = 0
        # Keeper-held coroutines that finished during the current batch: their keepers hear
        # it once the batch's held writes went out (they close the sockets).
        self._finished: list[Driven] = []

    def register(self, fd: int) -> None:
        """Watch ``fd`` (a connected socket) from now until it is closed."""
        self._ready.discard(fd)
        try:
            self._epoll.register(fd, _REGISTER)
        except FileExistsError:  # a closed socket's number reused before the kernel forgot it
            self._epoll.modify(fd, _REGISTER)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (still open: a listening socket another task goes on with)."""
        self._ready.discard(fd)
        try:
            self._epoll.unregister(fd)
        except (FileNotFoundError, OSError):  # never registered, or already closed
            pass

    async def wait_readable(self, fd: int) -> None:
        """Return when ``fd`` may have become readable since the caller's last read found it
        empty. Always a checkpoint; cancellation is delivered here."""
        ready = self._ready
        if fd in ready:
            ready.discard(fd)
            await _checkpoint()
            return
        readers = self._readers
        if fd in readers or fd in self._coro_readers:
            raise trio.BusyResourceError("another task is already reading this socket")
        readers[fd] = _current_task()
        await _park(_abort_for(readers, fd))

    def flagged(self, fd: int) -> bool:
        """An event reached ``fd`` while nobody waited on it, or reported its end (bytes, EOF
        or an error may be waiting, or were read since: the flag is only cleared by a wait or
        ``unflag``). Not flagged after a read that emptied the socket: nothing arrived since,
        so a read now can only fail (``MessageReader.fill`` then waits first)."""
        return fd in self._ready

    def unflag(self, fd: int) -> None:
        self._ready.discard(fd)

    def notify_closing(self, fd: int) -> None:
        """``fd`` is about to be closed: its waiter (if any) gets ClosedResourceError, and
        what is held or stalled for it is dropped (settle first to keep it)."""
        self._ready.discard(fd)
        self._outbox.pop(fd, None)
        if self._stalled.pop(fd, None) is not None:
            DRIVING.stalls -= 1
        task = self._readers.pop(fd, None)
        if task is not None:
            _reschedule(task, _Error(trio.ClosedResourceError("socket closed")))
        for waiting in (self._coro_readers, self._coro_writers):
            d = waiting.pop(fd, None)
            if d is not None:
                d.wait = -1
                self._queue(d, trio.ClosedResourceError("socket closed"))

    # ---- writes held for the batch's end ----

    def write_soon(self, fd: int, data: bytes) -> int:
        """A resident coroutine's write during a batch: how many bytes of ``data`` were taken
        (all when held for the batch's end; else what a write now took). Raises the write's
        OSError (BlockingIOError: nothing taken)."""
        outbox = self._outbox
        held = outbox.get(fd)
        if held is None:
            if len(data) > _OUTBOX_BYTES:
                return os.write(fd, data)
            n = len(outbox)
            if not n:
                self._held_at = _perf_counter()
            elif n % _OUTBOX_CHECK_FDS == 0 and _perf_counter() - self._held_at >= _OUTBOX_WAIT_S:
                self._flush()  # the first ones have waited long enough
                outbox = self._outbox
                self._held_at = _perf_counter()
            outbox[fd] = data
            self.held += 1
            return len(data)
        if len(held) + len(data) <= _OUTBOX_BYTES:
            outbox[fd] = held + data
            self.held += 1
            return len(data)
        # Too much for one socket: what is held goes first, then this, both now.
        del outbox[fd]
        if not self._write_or_stall(fd, held):
            return 0
        return os.write(fd, data)

    def settle(self, fd: int) -> bool:
        """Write what is stalled for ``fd``; True when nothing is left (a write error drops
        it: the caller's own write or read then meets the error)."""
        rest = self._stalled.get(fd)
        if rest is None:
            return True
        del self._stalled[fd]
        DRIVING.stalls -= 1
        return self._write_or_stall(fd, rest)

    def _write_or_stall(self, fd: int, data: bytes) -> bool:
        """Write ``data`` now; what the kernel does not take stalls (False)."""
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return True  # the peer is gone or the fd closed: the connection learns it itself
        if n == len(data):
            return True
        self._stalled[fd] = data[n:]
        DRIVING.stalls += 1
        self.stalled_writes += 1
        self._want_write(fd)
        return False

    def _want_write(self, fd: int) -> None:
        try:
            self._epoll.modify(fd, _REGISTER_WRITE)
        except FileNotFoundError:
            self._epoll.register(fd, _REGISTER_WRITE)

    def _flush(self) -> None:
        """The batch's end (and before a batch lets trio run): write what it held."""
        outbox = self._outbox
        self._outbox = {}
        for fd, data in outbox.items():
            self._write_or_stall(fd, data)

    # ---- resident coroutines ----

    def park_soon(self, d: Driven) -> None:
        """Its owner hands ``d`` over (new, or it yielded TO_DISPATCHER): resume it next round."""
        d.detached = False
        self._queue(d, None)

    def _queue(self, d: Driven, exc: BaseException | None) -> None:
        ticket = self._tickets + 1
        self._tickets = ticket
        d.ticket = ticket
        self._soon.append((d, ticket, exc))
        if self._sleeping:
            self._sleeping = False
            os.eventfd_write(self._wake_fd, 1)

    def detach(self, d: Driven) -> bool:
        """The owner's cancellation takes ``d`` back; False while it runs (it is then handed
        back as DETACHED when its step ends)."""
        if d.running:
            d.abort_pending = True
            return False
        d.detached = True
        d.ticket = 0
        fd = d.wait
        if fd >= 0:
            waiting = self._coro_writers if fd & 1 else self._coro_readers
            fd >>= 1
            if waiting.get(fd) is d:
                del waiting[fd]
            d.wait = -1
        return True

    def _step(self, d: Driven, exc: BaseException | None) -> object:
        """Resume ``d`` once. None: it parked here again. Otherwise the owner's next move:
        FINISHED, DETACHED, an outcome.Error (it raised), or the value it yielded for the
        owner (TO_TRIO, or a trio trap it should never have yielded here)."""
        d.running = True
        DRIVING.mode = RESIDENT
        try:
            code = d.coro.send(None) if exc is None else d.coro.throw(exc)
        except StopIteration:
            DRIVING.mode = OFF
            d.running = False
            return FINISHED
        except BaseException as e:  # the coroutine's own exception: its owner raises it
            DRIVING.mode = OFF
            d.running = False
            return _Error(e)
        DRIVING.mode = OFF
        d.running = False
        self.resumed += 1
        if type(code) is not int:
            self.strays += 1
            return code  # a trio trap: the owner forwards it (never expected here)
        if d.abort_pending:
            d.abort_pending = False
            d.detached = True
            d.wait = -1
            return DETACHED
        if code >= 0:
            fd = code >> 1
            if code & 1:
                self._coro_writers[fd] = d
                self._want_write(fd)
            else:
                ready = self._ready
                if fd in ready:
                    ready.discard(fd)
                    self._queue(d, None)
                    return None
                self._coro_readers[fd] = d
            d.wait = code
            return None
        if code == YIELD:
            self._queue(d, None)
            return None
        return code  # TO_TRIO (or TO_DISPATCHER, which only the owner understands)

    def _resume(self, d: Driven, exc: BaseException | None) -> None:
        if d.detached:
            return
        d.wait = -1
        d.ticket = 0
        move = self._step(d, exc)
        if move is None:
            return
        if move is not FINISHED:
            self.handoffs += 1
        if d.owner is None:
            if move is FINISHED:
                self._finished.append(d)
            else:
                self._tell_keeper(d, move)
            return
        try:
            _reschedule(d.owner, move if isinstance(move, outcome.Error) else _Value(move))
        except RuntimeError:  # a bug must not end the worker's run (as a system task would)
            self.failures += 1

    def _tell_keeper(self, d: Driven, move: object) -> None:
        keeper = d.keeper
        if keeper is None:
            self.failures += 1  # neither owner nor keeper: a bug, counted
            return
        try:
            keeper.on_move(move)
        except Exception:  # a bug must not end the worker's run (as a system task would)
            self.failures += 1

    def _end_finished(self) -> None:
        finished = self._finished
        self._finished = []
        for d in finished:
            self._tell_keeper(d, FINISHED)

    async def dispatch(self) -> None:
        """The run's system task: epoll batches -> reschedules and resumed coroutines, and
        the run-soon queue, until the run ends."""
        epoll = self._epoll
        readers = self._readers
        ready = self._ready
        coro_readers = self._coro_readers
        coro_writers = self._coro_writers
        stalled = self._stalled
        wake_fd = self._wake_fd
        events: list[tuple[int, int]] = []
        turn_at = 0.0  # when trio last gave the dispatcher its turn
        try:
            while True:
                if not events:
                    if self._soon:
                        await _shielded_checkpoint()  # others run; then no sleep: work waits
                    else:
                        self._sleeping = True
                        try:
                            await trio.lowlevel.wait_readable(epoll.fileno())
                        finally:
                            self._sleeping = False
                    turn_at = _perf_counter()
                    events = epoll.poll(0, _MAX_EVENTS)
                DRIVING.batch = self
                DRIVING.batch_at = _perf_counter()
                for fd, flags in events:
                    if fd == wake_fd:
                        try:
                            os.eventfd_read(wake_fd)
                        except BlockingIOError:
                            pass
                        continue
                    if flags & _WAKES_READER:
                        task = readers.pop(fd, None)
                        if task is not None:
                            if flags & _ENDS:
                                ready.add(fd)
                            _reschedule(task)
                        else:
                            d = coro_readers.pop(fd, None)
                            if d is None or flags & _ENDS:
                                ready.add(fd)
                            if d is not None:
                                self._resume(d, None)
                    if flags & _WAKES_WRITER:
                        if stalled and fd in stalled and not self.settle(fd):
                            continue  # still no room for what the batch held: wait on
                        d = coro_writers.pop(fd, None)
                        if d is not None:
                            self._resume(d, None)
                soon = self._soon
                if soon:
                    self._soon = []
                    for d, ticket, exc in soon:
                        if d.ticket == ticket:
                            self._resume(d, exc)
                if self._outbox:
                    now = _perf_counter()
                    if now - turn_at < _SPIN_S and now - self._held_at < _OUTBOX_WAIT_S:
                        # What arrived while this batch ran joins it: its writes then go out
                        # with this batch's, and each peer is woken once for both.
                        events = epoll.poll(0, _MAX_EVENTS)
                        if events:
                            continue
                    self._flush()
                DRIVING.batch = None
                if self._finished:
                    self._end_finished()
                if _perf_counter() - turn_at >= _SPIN_S:
                    await _shielded_checkpoint()
                    turn_at = _perf_counter()
                # What arrived while this batch ran is handled without a trio round.
                events = epoll.poll(0, _MAX_EVENTS)
        finally:
            DRIVING.batch = None
            DRIVING.stalls -= len(self._stalled)
            self._stalled.clear()
            epoll.close()
            os.close(wake_fd)


def _abort_for(
    readers: dict[int, trio.lowlevel.Task], fd: int
) -> Callable[[trio.lowlevel.RaiseCancelT], trio.lowlevel.Abort]:
    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        readers.pop(fd, None)
        return _SUCCEEDED

    return abort


def abort_resident(
    readiness: Readiness, d: Driven
) -> Callable[[trio.lowlevel.RaiseCancelT], trio.lowlevel.Abort]:
    """The abort function of an owner task parked while ``d`` is resident."""

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        return _SUCCEEDED if readiness.detach(d) else _FAILED

    return abort
