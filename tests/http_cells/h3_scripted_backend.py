"""A scripted HTTP/3 server (aioquic, asyncio) for the h3 back tests, as a process.

    python h3_scripted_backend.py --port P --cert C --key K [--max-streams N] [--name NAME]
        [--health-file F]

or, from a test, ``with scripted_h3(certs, name=..., max_streams=...) as udp_port``.

hypercorn serves the H3 cells' rule table; this serves what hypercorn's H3 cannot (it sends
no trailers, takes no request trailers, and moves a few MB/s at best) or cannot be told to do.
Paths: ``/sha`` answers the SHA-256 and length of the request body (hashed as it arrives);
``/echo`` answers once the request ended, with its body and, as response trailers,
the request's trailers plus ``x-echo-trailer: done``; ``/slow/MS`` answers after MS
milliseconds; ``/bytes/N`` answers N zero bytes, streamed (at most ``PUMP_UNACKED_BYTES``
unacknowledged at a time, refilled as ACKs arrive: never the whole body in memory); ``/goaway/NAME`` makes the first such request to the server called NAME send an H3 GOAWAY
naming its own stream (so it was not processed, RFC 9114 §5.2) and never answer it; later
ones, and other servers, answer;
``/reject`` resets the stream with H3_REQUEST_REJECTED; ``/qpack-bomb`` answers with a
QPACK bomb (one 4000-byte dynamic-table entry referenced 60 000 times: a 60 KB HEADERS frame
that would decode to ~240 MB; the server's own encoder never uses the dynamic table); ``/healthz`` answers 200, or 503
while the file named by ``--health-file`` exists. Every answer's body starts with
``NAME CONN`` (CONN: the connection's original DCID) so a test can count connections.
``--max-streams`` lowers the peer's initial MAX_STREAMS (bidirectional). Prints "ready".
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from qpack_wire import StaticOnlyEncoder, indexed_lines, insert, section_prefix, set_capacity

H3_REQUEST_REJECTED = 0x10B
PUMP_UNACKED_BYTES = 1 << 20
PUMP_CHUNK = bytes(64 * 1024)
STATE = {"goaway_sent": False}


class Server(QuicConnectionProtocol):
    name = ""
    max_streams = 0
    health_file = ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.max_streams:
            limit = self._quic._local_max_streams_bidi
            limit.value = limit.sent = self.max_streams
        self._h3: H3Connection | None = None
        self._conn = self._quic._original_destination_connection_id.hex()
        self._requests: dict[int, dict[str, object]] = {}
        self._pumping: dict[int, int] = {}  # /bytes/N stream id -> bytes still to queue
        self._inserts = 0  # dynamic-table entries /qpack-bomb wrote on this connection

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self._pumping:  # ACKs may have emptied a send buffer
            self._pump()

    def _pump(self) -> None:
        assert self._h3 is not None
        for stream_id, left in list(self._pumping.items()):
            stream = self._quic._streams.get(stream_id)
            try:
                while left and len(stream.sender._buffer) < PUMP_UNACKED_BYTES:  # type: ignore[union-attr]
                    n = min(left, len(PUMP_CHUNK))
                    left -= n
                    self._h3.send_data(stream_id, PUMP_CHUNK[:n], end_stream=not left)
            except Exception:  # the stream is gone, reset or stopped: nothing more to send
                left = 0
            if left:
                self._pumping[stream_id] = left
            else:
                del self._pumping[stream_id]
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
            self._h3._encoder = StaticOnlyEncoder(self._h3._encoder)  # type: ignore[assignment]
        if self._h3 is None:
            return
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                request = self._requests.get(ev.stream_id)
                if request is None:
                    self._requests[ev.stream_id] = {
                        "headers": dict(ev.headers),
                        "body": bytearray(),
                        "trailers": [],
                        "sha": hashlib.sha256(),
                        "size": 0,
                    }
                else:
                    request["trailers"] = list(ev.headers)
            elif isinstance(ev, DataReceived):
                request = self._requests[ev.stream_id]
                request["sha"].update(ev.data)  # type: ignore[attr-defined]
                request["size"] += len(ev.data)  # type: ignore[operator]
                if request["headers"][b":path"] == b"/echo":  # type: ignore[index]
                    request["body"] += ev.data  # type: ignore[operator]
            else:
                continue
            if ev.stream_ended:
                self._answer(ev.stream_id)
        self.transmit()

    def _send(self, stream_id: int, status: int, body: bytes, trailers: list | None = None) -> None:
        assert self._h3 is not None
        head = [(b":status", str(status).encode())]
        if not trailers:  # else no length: an HTTP/1.1 client then gets chunked + trailers
            head.append((b"content-length", str(len(body)).encode()))
        self._h3.send_headers(stream_id, head)
        self._h3.send_data(stream_id, body, end_stream=not trailers)
        if trailers:
            self._h3.send_headers(stream_id, trailers, end_stream=True)
        self.transmit()

    def _answer(self, stream_id: int) -> None:
        assert self._h3 is not None
        request = self._requests.pop(stream_id)
        headers = request["headers"]
        assert isinstance(headers, dict)
        path = headers[b":path"].decode()
        tag = f"{self.name} {self._conn}".encode()
        if path == "/sha":
            digest = request["sha"].hexdigest()  # type: ignore[attr-defined]
            answer = {"sha256": digest, "bytes": request["size"]}
            self._send(stream_id, 200, json.dumps(answer).encode())
        elif path == "/echo":
            body = request["body"]
            assert isinstance(body, bytearray)
            trailers = [(n, v) for n, v in request["trailers"]]  # type: ignore[attr-defined]
            self._send(stream_id, 200, bytes(body), [*trailers, (b"x-echo-trailer", b"done")])
        elif path.startswith("/slow/"):
            delay_s = int(path.rsplit("/", 1)[1]) / 1000
            asyncio.get_running_loop().call_later(delay_s, self._send, stream_id, 200, tag)
        elif path == f"/goaway/{self.name}" and not STATE["goaway_sent"]:
            STATE["goaway_sent"] = True
            control = self._h3._local_control_stream_id
            assert control is not None
            self._quic.send_stream_data(
                control, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id))
            )
        elif path.startswith("/bytes/"):
            size = int(path.rsplit("/", 1)[1])
            self._h3.send_headers(
                stream_id, [(b":status", b"200"), (b"content-length", str(size).encode())]
            )
            if size:
                self._pumping[stream_id] = size
                self._pump()
            else:
                self._h3.send_data(stream_id, b"", end_stream=True)
                self.transmit()
        elif path == "/qpack-bomb":
            encoder = self._h3._local_encoder_stream_id
            assert encoder is not None
            capacity = 4096  # the gateway's SETTINGS_QPACK_MAX_TABLE_CAPACITY
            self._quic.send_stream_data(
                encoder, set_capacity(capacity) + insert(b"x-bomb", b"b" * 4000)
            )
            self._inserts += 1
            bomb = section_prefix(self._inserts, capacity) + bytes([0xC0 | 25])  # :status 200
            bomb += indexed_lines(60_000)
            self._quic.send_stream_data(stream_id, encode_frame(FrameType.HEADERS, bomb), True)
            self.transmit()
        elif path == "/reject":
            self._quic.reset_stream(stream_id, H3_REQUEST_REJECTED)
        elif path == "/healthz":
            sick = bool(self.health_file) and os.path.exists(self.health_file)
            self._send(stream_id, 503 if sick else 200, tag)
        else:
            self._send(stream_id, 200, tag)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--name", default="b")
    p.add_argument("--max-streams", type=int, default=0)
    p.add_argument("--health-file", default="")
    args = p.parse_args()
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, idle_timeout=30.0)
    config.load_cert_chain(args.cert, args.key)
    Server.name = args.name
    Server.max_streams = args.max_streams
    Server.health_file = args.health_file
    await serve(args.host, args.port, configuration=config, create_protocol=Server)
    print("ready", flush=True)
    await asyncio.Future()


class ScriptedH3:
    """This server as a process on a fresh UDP port; ``kill`` ends it (the test's chaos)."""

    def __init__(
        self, certs: Any, *, name: str = "b", max_streams: int = 0, health_file: str = ""
    ) -> None:
        from tools.ports import free_port

        self.name = name
        self.port = free_port(socket.SOCK_DGRAM)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--port",
            str(self.port),
            "--cert",
            str(certs.cert),
            "--key",
            str(certs.key),
            "--name",
            name,
            "--max-streams",
            str(max_streams),
            "--health-file",
            health_file,
        ]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    def wait_ready(self) -> ScriptedH3:
        """Until the process says it listens (start several, then wait: they boot at once)."""
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.kill()
            raise RuntimeError(f"scripted H3 backend {self.name} did not start")
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@contextmanager
def scripted_h3(
    certs: Any, *, name: str = "b", max_streams: int = 0, health_file: str = ""
) -> Iterator[int]:
    """A ``ScriptedH3`` for the block; yields its UDP port."""
    server = ScriptedH3(certs, name=name, max_streams=max_streams, health_file=health_file)
    try:
        server.wait_ready()
        yield server.port
    finally:
        server.kill()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
