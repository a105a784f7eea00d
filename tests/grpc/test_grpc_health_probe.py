"""The supervisor's gRPC health probe (supervisor/prober.probe_grpc) against grpcio's own
grpc.health.v1 servicer: SERVING passes; NOT_SERVING, an unknown service, a server that is
not there and a server that never answers fail, each with its reason."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace
from typing import Any

from grpc_peers import SERVICE, EchoBackend

from gateway.config.plan import BackendPlan
from gateway.config.schema import HealthConfig
from supervisor.prober import probe_grpc
from tools.ports import free_port


def _plan(port: int) -> BackendPlan:
    return BackendPlan(
        id=f"127.0.0.1:{port}",
        host="127.0.0.1",
        port=port,
        protocol="h2",
        weight=1,
        proxy_protocol="none",
    )


def _listener(service: str) -> Any:
    return SimpleNamespace(health=HealthConfig(kind="grpc", grpc_service=service))


async def test_serving_passes_and_not_serving_or_unknown_service_fail() -> None:
    backend = EchoBackend(free_port()).start()
    try:
        plan = _plan(backend.port)
        assert await probe_grpc(plan, _listener(SERVICE), 2.0) == ""
        assert await probe_grpc(plan, _listener(""), 2.0) == ""
        backend.set_serving(False)
        assert await probe_grpc(plan, _listener(SERVICE), 2.0) == "serving status NOT_SERVING"
        # grpcio answers an unknown service with NOT_FOUND (5).
        assert await probe_grpc(plan, _listener("no.Such"), 2.0) == "grpc-status 5"
    finally:
        backend.stop()


async def test_absent_and_silent_backends_fail() -> None:
    closed = await probe_grpc(_plan(free_port()), _listener(""), 1.0)
    assert closed.startswith("connect:")
    with socket.socket() as silent:  # accepts (backlog) and never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        problem = await probe_grpc(_plan(port), _listener(""), 0.3)
    assert problem == "timeout after 0.300s"


async def test_plain_http_server_is_not_a_grpc_health_service() -> None:
    """An HTTP/1.1 server answers the HTTP/2 preface with garbage: a failure, not a pass."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def answer() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        problem = await probe_grpc(_plan(port), _listener(""), 2.0)
        thread.join(2)
    assert problem != ""
