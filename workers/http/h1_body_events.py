"""The next body event of an HTTP/1.1 message, read within the body idle timeout.

Owns the one loop both H1 body sources share (the client's request body on the front, the
backend's response body on the back): take a queued parser event, or read once when none
is queued, and turn a read that waits longer than the idle timeout into the step's typed
lapse. Must never interpret the events (each source does).
"""

from __future__ import annotations

import trio

from workers.http1.exchange_steps import lapse_error
from workers.http1.message_reader import Event, MessageReader


async def next_body_event(reader: MessageReader, idle_s: float, step: int) -> Event:
    """The next event of ``reader``; a read idle for ``idle_s`` raises ``step``'s lapse."""
    while not reader.events:
        with trio.move_on_after(idle_s) as scope:
            await reader.fill()
        if scope.cancelled_caught:
            raise lapse_error(step, False)
    return reader.events.popleft()
