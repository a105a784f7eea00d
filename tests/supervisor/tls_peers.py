"""Real peers for the TLS and PROXY protocol tests: backends that run in a thread.

`EchoPeer` is a blocking-socket TCP backend that optionally reads a PROXY protocol
header first (parsed here, independently of gateway/proxy_protocol.py, straight from
the HAProxy spec), optionally speaks TLS after it (Python `ssl`, server side), then
echoes until EOF. `HttpsPeer` is the stdlib HTTP server behind TLS. Both record what
they saw so tests can assert on it.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field

V2_SIGNATURE = bytes.fromhex("0d0a0d0a000d0a515549540a")


@dataclass
class ProxySeen:
    version: int
    family: str  # TCP4 | TCP6
    source: tuple[str, int]
    destination: tuple[str, int]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} header bytes")
        buf += chunk
    return buf


def read_proxy_header(sock: socket.socket) -> ProxySeen:
    """Parse a v1 or v2 header byte by byte off `sock` (never reading past its end)."""
    head = _recv_exact(sock, 16)
    if head.startswith(b"PROXY "):
        line = head
        while not line.endswith(b"\r\n"):
            if len(line) > 107:
                raise ValueError("v1 header longer than 107 bytes")
            line += _recv_exact(sock, 1)
        parts = line[:-2].decode("ascii").split(" ")
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ValueError(f"bad v1 header {line!r}")
        return ProxySeen(1, parts[1], (parts[2], int(parts[4])), (parts[3], int(parts[5])))
    if head[:12] != V2_SIGNATURE:
        raise ValueError(f"no PROXY header: {head!r}")
    ver_cmd, fam, length = head[12], head[13], struct.unpack("!H", head[14:16])[0]
    if ver_cmd != 0x21:
        raise ValueError(f"v2 version/command byte {ver_cmd:#x}, expected 0x21")
    body = _recv_exact(sock, length)
    if fam == 0x11 and length >= 12:
        af, size, family = socket.AF_INET, 4, "TCP4"
    elif fam == 0x21 and length >= 36:
        af, size, family = socket.AF_INET6, 16, "TCP6"
    else:
        raise ValueError(f"v2 family/protocol {fam:#x} with length {length}")
    src = socket.inet_ntop(af, body[:size])
    dst = socket.inet_ntop(af, body[size : 2 * size])
    sport, dport = struct.unpack("!HH", body[2 * size : 2 * size + 4])
    return ProxySeen(2, family, (src, sport), (dst, dport))


@dataclass
class EchoPeer:
    expect_proxy: bool = False
    tls: ssl.SSLContext | None = None
    seen: list[ProxySeen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.handshakes_ok = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        stream: socket.socket = conn
        try:
            if self.expect_proxy:
                self.seen.append(read_proxy_header(conn))
            if self.tls is not None:
                stream = self.tls.wrap_socket(conn, server_side=True)
                self.handshakes_ok += 1
            while data := stream.recv(65536):
                stream.sendall(data)
            if self.tls is None:
                stream.shutdown(socket.SHUT_WR)
        except (OSError, ValueError) as exc:  # recorded for the test to assert on
            self.errors.append(repr(exc))
        finally:
            stream.close()

    def close(self) -> None:
        self.listener.close()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello over tls from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class HttpsPeer:
    """`http.server` behind TLS: an HTTPS backend for h1 listeners."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
