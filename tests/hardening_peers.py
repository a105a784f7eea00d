"""Peers for the hardening tests (issue 17: caps, descriptors, relay liveness, H1 abuse).

Thread-run backends that record what they saw (each connection's close time), a client
helper that tells "served", "closed at once" and "no answer" apart, a /metrics scraper,
and `LimitedGateway`: the real gateway started under a chosen RLIMIT_NOFILE.
"""

from __future__ import annotations

import http.client
import resource
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from running_gateway import BIN, ROOT, RunningGateway


class LimitedGateway(RunningGateway):
    """The gateway started with RLIMIT_NOFILE = (soft, hard): the supervisor and, through
    it, every worker inherit it (setrlimit in the child, before exec)."""

    def __init__(self, *args: object, nofile: tuple[int, int], **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.nofile = nofile

    def start(self, *, wait_ready: bool = True) -> LimitedGateway:
        soft, hard = self.nofile

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "expressgateway"), str(self.config_path)],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
        if wait_ready:
            self.wait_ready()
        return self


@dataclass
class ConnRecord:
    opened_at: float
    closed_at: float | None = None
    received: int = 0


@dataclass
class _ThreadServer:
    host: str = "127.0.0.1"
    port: int = 0
    conns: list[ConnRecord] = field(default_factory=list)

    def start(self) -> _ThreadServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self.port = self._sock.getsockname()[1]
        self._sock.listen(1024)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            record = ConnRecord(time.monotonic())
            self.conns.append(record)
            threading.Thread(target=self._serve_one, args=(conn, record), daemon=True).start()

    def _serve_one(self, conn: socket.socket, record: ConnRecord) -> None:
        try:
            with conn:
                self.serve(conn, record)
        except OSError:
            pass
        finally:
            record.closed_at = time.monotonic()

    def serve(self, conn: socket.socket, record: ConnRecord) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._sock.close()

    def open_connections(self) -> int:
        return sum(1 for c in self.conns if c.closed_at is None)


class EchoServer(_ThreadServer):
    """Echoes until EOF or error; each connection's close time is recorded."""

    def serve(self, conn: socket.socket, record: ConnRecord) -> None:
        while data := conn.recv(65536):
            record.received += len(data)
            conn.sendall(data)


class ClosingHttpServer(_ThreadServer):
    """HTTP/1.1 answers with `Connection: close`: every request needs a new upstream socket."""

    def serve(self, conn: socket.socket, record: ConnRecord) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


class EndlessHttpServer(_ThreadServer):
    """Answers any request with a chunked body that never ends (until the peer goes)."""

    def serve(self, conn: socket.socket, record: ConnRecord) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
        while True:
            conn.sendall(chunk)
            record.received += len(chunk)  # here: bytes *sent*


def http_get(
    port: int, host: str = "127.0.0.1", source: str | None = None, timeout_s: float = 5.0
) -> int:
    conn = http.client.HTTPConnection(
        host, port, timeout=timeout_s, source_address=(source, 0) if source else None
    )
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def read_status(sock: socket.socket, timeout_s: float) -> int | None:
    """The status of one response read off `sock` (head plus Content-Length body); None
    when nothing came within `timeout_s` (the worker did not accept: EMFILE at accept)."""
    sock.settimeout(timeout_s)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return 0
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
    except TimeoutError:
        return None
    except ConnectionResetError:
        return 0
    return int(head.split(b" ", 2)[1])


def outcome(sock: socket.socket, timeout_s: float = 2.0) -> str:
    """What a client sees next on `sock`: "eof", "reset", "data" or "silent"."""
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "silent"
    return "data" if data else "eof"


def scrape(admin_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def rejections(admin_port: int) -> dict[str, float]:
    """expressgateway_security_rejections_total by reason."""
    found: dict[str, float] = {}
    for (name, labels), value in scrape(admin_port).items():
        if name == "expressgateway_security_rejections_total":
            found[dict(labels)["reason"]] = value
    return found


def upstream_errors(admin_port: int) -> float:
    return sum(
        v
        for (name, _labels), v in scrape(admin_port).items()
        if name == "expressgateway_upstream_errors_total"
    )


def wait_until(predicate: object, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval_s)
    return bool(predicate())  # type: ignore[operator]
