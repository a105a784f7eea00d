"""The worker's end of the control channel to the supervisor (framed msgpack)."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

import trio

from gateway.ipc import FrameDecoder, ToSupervisor, ToWorker, encode


class SupervisorChannel:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder("to_worker")
        self._pending: deque[ToWorker] = deque()  # decoded, not yet handed out
        self._send_lock = trio.Lock()

    async def send(self, message: ToSupervisor) -> None:
        async with self._send_lock:
            await self._stream.send_all(encode(message))

    async def receive(self) -> AsyncIterator[ToWorker]:
        """Yield commands until the supervisor closes the channel.

        Messages that arrived in the same read as one the consumer stopped at (the
        boot loop stops at Boot) wait in `_pending` for the next `receive()`.
        """
        while True:
            while self._pending:
                yield self._pending.popleft()
            data = await self._stream.receive_some(65536)
            if not data:
                return
            self._pending.extend(self._decoder.feed(data))  # type: ignore[arg-type]
