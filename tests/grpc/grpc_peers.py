"""Real gRPC peers for the gateway's gRPC tests: a grpcio server with generic (bytes in,
bytes out) handlers and the standard health servicer, and a grpcio client channel.

Owns the ``test.Echo`` service (unary echo with trailing metadata and chosen errors, the
request metadata echoed, a server stream, a client stream, a bidi echo, a call that waits
to be cancelled and records how it ended and what deadline it was given) and the channel
options for 4 MiB+ messages. No
generated code: methods are called by path with identity serializers. Must never listen
anywhere but 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "test.Echo"
MAX_MESSAGE = 8 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # Every call on a fresh subchannel would hide a gateway that mixes streams up.
    ("grpc.enable_retries", 0),
]


@dataclass
class Observed:
    """What the backend saw of its ``Wait`` calls (set from grpcio's threads)."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    time_remaining: list[float | None] = field(default_factory=list)
    calls: int = 0
    produced: int = 0  # messages the Flood stream handed to grpcio so far


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request.startswith(b"fail:"):
        # A status the gateway must relay exactly (trailers-only from the backend).
        context.set_trailing_metadata((("x-why", "asked-to-fail"),))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, request[5:].decode())
    context.set_trailing_metadata((("x-trailer", "t-value"), ("x-bin-bin", b"\x00\x01\xff")))
    return request


def _meta(request: bytes, context: grpc.ServicerContext) -> bytes:
    """The call's request metadata as ``key=value`` lines (binary values as their repr)."""
    return "\n".join(f"{k}={v}" for k, v in context.invocation_metadata()).encode()


def _server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    count, _, size = request.partition(b":")
    payload = b"x" * int(size or b"16")
    for i in range(int(count)):
        yield b"%08d" % i + payload


def _slow_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(int(request)):
        yield b"%d" % i
        time.sleep(0.1)


def _client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    count = total = 0
    for message in requests:
        count += 1
        total += len(message)
    return b"%d:%d" % (count, total)


def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for message in requests:
        yield b"echo:" + message


class EchoBackend:
    """A grpcio server on 127.0.0.1 with ``test.Echo`` and grpc.health.v1.Health."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.observed = Observed()
        self.health = health.HealthServicer()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=OPTIONS,
            maximum_concurrent_rpcs=64,
        )
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Meta": grpc.unary_unary_rpc_method_handler(_meta),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "SlowStream": grpc.unary_stream_rpc_method_handler(_slow_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
            "Wait": grpc.unary_unary_rpc_method_handler(self._wait),
            "Flood": grpc.unary_stream_rpc_method_handler(self._flood),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        bound = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert bound == port, f"could not bind 127.0.0.1:{port}"

    def _wait(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Holds the call until the peer cancels it (or 10 s pass); records both facts."""
        seen = self.observed
        seen.calls += 1
        seen.time_remaining.append(context.time_remaining())
        done = threading.Event()
        context.add_callback(done.set)
        seen.started.set()
        done.wait(10.0)
        if not context.is_active():
            seen.cancelled.set()
        return request

    def _flood(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """``count:size`` messages as fast as flow control lets them go; counts them."""
        count, _, size = request.partition(b":")
        payload = b"f" * int(size)
        self.observed.produced = 0
        for _ in range(int(count)):
            if not context.is_active():
                return
            yield payload
            self.observed.produced += 1

    def start(self) -> EchoBackend:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set(SERVICE, status)


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)


def method(ch: grpc.Channel, name: str) -> grpc.UnaryUnaryMultiCallable:
    path = f"/{SERVICE}/{name}"
    kinds = {
        "ServerStream": ch.unary_stream,
        "SlowStream": ch.unary_stream,
        "Flood": ch.unary_stream,
        "ClientStream": ch.stream_unary,
        "Bidi": ch.stream_stream,
    }
    return kinds.get(name, ch.unary_unary)(path)  # type: ignore[no-any-return,operator]


def wait_until(predicate: object, timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step_s)
    return False


class ResettingBackend:
    """A raw HTTP/2 server (h2, one thread per connection) that takes each request's
    headers and first DATA, then resets the stream with INTERNAL_ERROR: the request reached
    a backend, which failed it before any response. Counts the requests it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._stop = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        h2conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        h2conn.initiate_connection()
        with conn:
            try:
                conn.sendall(h2conn.data_to_send())
                while data := conn.recv(65536):
                    for event in h2conn.receive_data(data):
                        if isinstance(event, h2.events.RequestReceived):
                            self.requests += 1
                        elif isinstance(event, h2.events.DataReceived):
                            h2conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                            h2conn.reset_stream(
                                event.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR
                            )
                    conn.sendall(h2conn.data_to_send())
            except (OSError, h2.exceptions.ProtocolError):
                return

    def stop(self) -> None:
        self._stop = True
        self.sock.close()
