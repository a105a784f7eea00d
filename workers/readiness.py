"""Edge-triggered read readiness for the proxy's plain TCP sockets: one epoll per trio run and
one dispatcher task.

trio's ``wait_readable`` arms a one-shot registration per wait (an ``epoll_ctl`` call, a waiter
record built and torn down, two passes through its registration bookkeeping, all interpreted)
and proxying a small request waits twice. Here a socket is registered once, edge-triggered,
when its reader is made; a wait is a dict store and a park; the dispatcher, a trio system task
that trio wakes when the epoll fd is readable, turns each batch of events into reschedules.

Edge-triggered: an event reports new readiness only. An event that finds no waiter sets the
fd's ready flag (so does any event that reports the peer's end, waiter or not), and the next
wait on that fd is a plain checkpoint instead of a park; callers
read after every wait and wait again when the read finds nothing, so a stale flag costs one
extra read, never a lost wakeup. Registering a fd again (the kernel drops a closed socket from
the epoll, so a new socket may get the same number) replaces the old registration.

Owns: the epoll, the waiting tasks, the ready flags. Must never read or write a socket. A task
waiting here is woken by an event, by cancellation (which is how the proxy ends connections),
or by ``notify_closing`` (call it before closing a registered socket: trio's own
``notify_closing`` only knows trio's waiters).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Final

import outcome
import trio

_REGISTER: Final = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
# Peer data, peer close, hang-up and errors all wake a reader: its read then sees them.
_WAKES_READER: Final = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
# An end (peer close, hang-up, error) also flags the fd even when it wakes a reader: a read
# that then gets the last bytes does not see the end behind them, and no later edge comes.
_ENDS: Final = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_MAX_EVENTS: Final = 256

# Bound once (compiled, each ``trio.lowlevel.X`` is two module attribute lookups).
_current_task: Final = trio.lowlevel.current_task
_park: Final = trio.lowlevel.wait_task_rescheduled
_reschedule: Final = trio.lowlevel.reschedule
_checkpoint: Final = trio.lowlevel.checkpoint
_SUCCEEDED: Final = trio.lowlevel.Abort.SUCCEEDED

_RUN_READINESS: trio.lowlevel.RunVar[Readiness] = trio.lowlevel.RunVar("eg_readiness")


def current_readiness() -> Readiness:
    """This trio run's Readiness, made (and its dispatcher started) on first use."""
    try:
        return _RUN_READINESS.get()
    except LookupError:
        readiness = Readiness()
        _RUN_READINESS.set(readiness)
        trio.lowlevel.spawn_system_task(readiness.dispatch, name="eg-readiness")
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

    def register(self, fd: int) -> None:
        """Watch ``fd`` (a connected socket) from now until it is closed."""
        self._ready.discard(fd)
        try:
            self._epoll.register(fd, _REGISTER)
        except FileExistsError:  # a closed socket's number reused before the kernel forgot it
            self._epoll.modify(fd, _REGISTER)

    async def wait_readable(self, fd: int) -> None:
        """Return when ``fd`` may have become readable since the caller's last read found it
        empty. Always a checkpoint; cancellation is delivered here."""
        ready = self._ready
        if fd in ready:
            ready.discard(fd)
            await _checkpoint()
            return
        readers = self._readers
        if fd in readers:
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
        """``fd`` is about to be closed: its waiter (if any) gets ClosedResourceError."""
        self._ready.discard(fd)
        task = self._readers.pop(fd, None)
        if task is not None:
            _reschedule(task, outcome.Error(trio.ClosedResourceError("socket closed")))

    async def dispatch(self) -> None:
        """The run's system task: epoll batches -> reschedules, until the run ends."""
        epoll = self._epoll
        readers = self._readers
        ready = self._ready
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, flags in epoll.poll(0, _MAX_EVENTS):
                    if flags & _WAKES_READER:
                        task = readers.pop(fd, None)
                        if task is None or flags & _ENDS:
                            ready.add(fd)
                        if task is not None:
                            _reschedule(task)
        finally:
            epoll.close()


def _abort_for(
    readers: dict[int, trio.lowlevel.Task], fd: int
) -> Callable[[trio.lowlevel.RaiseCancelT], trio.lowlevel.Abort]:
    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        readers.pop(fd, None)
        return _SUCCEEDED

    return abort
