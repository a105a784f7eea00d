"""TCP load for the relay benchmark: a discarding sink backend and a pushing client.

Both are cheap on purpose, so the proxy in between is what runs out of CPU: the client
sends from a memfd with sendfile(2) (no user-space copy) and the sink receives with
MSG_TRUNC, which on TCP makes the kernel drop the bytes without copying them out.
Owns: the sink's accept loop and per-connection threads, the client threads, and the
moment the last byte arrived. Must never: listen anywhere but 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

DISCARD_CHUNK_BYTES = 8 << 20  # the most one recv may drop (> any TCP receive buffer)
PAYLOAD_BYTES = 16 << 20


class LoadError(RuntimeError):
    """A client connection failed, or the bytes did not all arrive in time."""


@dataclass
class Delivery:
    bytes: int
    connections: int
    done_at: float  # time.perf_counter() when the last connection's EOF reached the sink


class DiscardSink:
    """The backend: accepts on 127.0.0.1, counts and discards, closes on EOF."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._bytes = 0
        self._connections = 0
        self._done_at = 0.0
        self._closed = False
        threading.Thread(target=self._accept_loop, name="sink-accept", daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self._bytes, self._connections, self._done_at = 0, 0, 0.0

    def wait(self, connections: int, timeout_s: float) -> Delivery:
        """Until `connections` data-carrying connections have ended (EOF) at the sink."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._connections >= connections, timeout_s):
                raise LoadError(
                    f"sink: {self._connections}/{connections} connections finished, "
                    f"{self._bytes} bytes after {timeout_s}s"
                )
            return Delivery(self._bytes, self._connections, self._done_at)

    def close(self) -> None:
        self._closed = True
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._discard, args=(conn,), daemon=True).start()

    def _discard(self, conn: socket.socket) -> None:
        buf = bytearray(DISCARD_CHUNK_BYTES)
        received = 0
        with conn:
            try:
                while n := conn.recv_into(buf, 0, socket.MSG_TRUNC):
                    received += n
            except ConnectionError:
                return
        if received == 0:
            return  # readiness probes of the proxies carry no data
        now = time.perf_counter()
        with self._cond:
            self._bytes += received
            self._connections += 1
            self._done_at = max(self._done_at, now)
            self._cond.notify_all()


def make_payload() -> int:
    """A memfd of random bytes that every client connection sendfile()s from."""
    fd = os.memfd_create("bench-payload")
    os.write(fd, os.urandom(PAYLOAD_BYTES))
    return fd


def push(
    port: int, total_bytes: int, connections: int, payload_fd: int, timeout_s: float
) -> list[BaseException]:
    """Send total_bytes over `connections` parallel connections; each half-closes when done
    and waits for the proxy's EOF. Returns the errors of the connections that failed."""
    errors: list[BaseException] = []
    share = total_bytes // connections

    def one(quota: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
                # Blocking fd for sendfile(2); the kernel enforces the timeout instead.
                sock.settimeout(None)
                timeval = struct.pack("ll", int(timeout_s), 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
                sent = 0
                while sent < quota:
                    offset = sent % PAYLOAD_BYTES
                    count = min(quota - sent, PAYLOAD_BYTES - offset)
                    sent += os.sendfile(sock.fileno(), payload_fd, offset, count)
                sock.shutdown(socket.SHUT_WR)
                if sock.recv(1):
                    raise LoadError("the relay sent data back; the sink never writes")
        except (OSError, LoadError) as exc:
            errors.append(exc)

    quotas = [share] * connections
    quotas[-1] += total_bytes - share * connections
    threads = [
        threading.Thread(target=one, args=(q,), name=f"push-{i}", daemon=True)
        for i, q in enumerate(quotas)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
