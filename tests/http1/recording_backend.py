"""A backend that records exactly the bytes each connection brought, for smuggling tests.

Owns: one trio TCP listener on loopback, the raw bytes of every accepted connection, and a
strict h11 parse of them: each complete request is answered with a fixed 200 ("ok"), keeps
its target and headers, and counts. A parse error is recorded and closes that connection.
Must never be lenient: it is the judge of what a proxy actually put on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11
import trio

FIXED_RESPONSE_BODY = b"ok"


@dataclass
class SeenRequest:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class ConnectionRecord:
    raw: bytearray = field(default_factory=bytearray)
    complete: list[SeenRequest] = field(default_factory=list)
    error: str | None = None


class RecordingBackend:
    """`await nursery.start(backend.serve)`; then `backend.port` accepts connections."""

    def __init__(self) -> None:
        self.port = 0
        self.connections: list[ConnectionRecord] = []
        self.requests: list[SeenRequest] = []  # every complete request, in arrival order

    @property
    def raw_bytes(self) -> int:
        return sum(len(c.raw) for c in self.connections)

    @property
    def errors(self) -> list[str]:
        return [c.error for c in self.connections if c.error]

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        record = ConnectionRecord()
        self.connections.append(record)
        conn = h11.Connection(h11.SERVER)
        current: SeenRequest | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    record.raw += data
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    current = SeenRequest(
                        bytes(event.method),
                        bytes(event.target),
                        [(bytes(n), bytes(v)) for n, v in event.headers],
                        b"",
                    )
                    body.clear()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert current is not None
                    current.body = bytes(body)
                    record.complete.append(current)
                    self.requests.append(current)
                    await self._respond(stream, conn, head_only=current.method == b"HEAD")
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.RemoteProtocolError as exc:
            record.error = f"h11: {exc}"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            record.error = f"io: {exc!r}"
        finally:
            await trio.aclose_forcefully(stream)

    @staticmethod
    async def _respond(stream: trio.SocketStream, conn: h11.Connection, *, head_only: bool) -> None:
        headers = [("content-length", str(len(FIXED_RESPONSE_BODY))), ("x-backend", "recording")]
        data = conn.send(h11.Response(status_code=200, headers=headers)) or b""
        if not head_only:
            data += conn.send(h11.Data(data=FIXED_RESPONSE_BODY)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
