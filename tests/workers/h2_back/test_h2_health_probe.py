"""Active HTTP health checks of `protocol = "h2"` backends speak HTTP/2 (supervisor/prober.py
with gateway/health/h2_probe.py), h2c or TLS + ALPN h2, with expected_status as for HTTP/1.1."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from h2_backends import backend_plan, hypercorn_backend

from gateway.config.schema import BackendTlsConfig, HealthConfig
from supervisor.prober import probe_h2, probe_http
from tools.make_certs import make_certs

OK_RANGES = [(200, 399)]


async def test_h2c_probe_is_up_on_200_and_down_on_an_unexpected_status() -> None:
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        assert await probe_h2(plan, "/healthz", "svc", OK_RANGES, "200-399", 2.0) == ""
        problem = await probe_h2(plan, "/status/503", "svc", OK_RANGES, "200-399", 2.0)
        assert problem == "status 503 not in 200-399"


async def test_probe_http_dispatches_h2_backends_to_the_h2_probe() -> None:
    listener: Any = SimpleNamespace(
        health=HealthConfig(kind="http", path="/status/204", expected_status="204")
    )
    async with hypercorn_backend() as port:
        assert await probe_http(backend_plan(port), listener, 2.0) == ""
        listener.health = HealthConfig(kind="http", path="/status/500", expected_status="204")
        assert await probe_http(backend_plan(port), listener, 2.0) == "status 500 not in 204"


async def test_tls_probe_negotiates_h2_and_verifies_the_certificate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")
    async with hypercorn_backend(certs=certs) as port:
        trusted = backend_plan(port, BackendTlsConfig(ca_path=str(certs.ca_cert)))
        assert await probe_h2(trusted, "/", "localhost", OK_RANGES, "200-399", 2.0) == ""
        untrusted = backend_plan(port, BackendTlsConfig(ca_path=str(other.ca_cert)))
        problem = await probe_h2(untrusted, "/", "localhost", OK_RANGES, "200-399", 2.0)
        assert problem.startswith("tls:")


async def test_probe_of_a_closed_port_is_down() -> None:
    problem = await probe_h2(backend_plan(1), "/", "svc", OK_RANGES, "200-399", 1.0)
    assert problem.startswith("connect:")


@pytest.mark.parametrize("status,expected", [(200, ""), (404, "status 404 not in 200-399")])
def test_status_problem_shared_by_both_probes(status: int, expected: str) -> None:
    from gateway.health.h2_probe import status_problem

    assert status_problem(status, OK_RANGES, "200-399") == expected
