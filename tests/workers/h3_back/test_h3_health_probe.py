"""Active HTTP health checks of `protocol = "h3"` backends speak HTTP/3 (supervisor/prober.py
with gateway/health/h3_probe.py): the QUIC handshake verifies the certificate as the
workers do, and the status must fall in expected_status."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from h3_backends import h3_plan, hypercorn_h3
from h3_scripted_backend import scripted_h3

from gateway.config.schema import BackendTlsConfig, HealthConfig
from supervisor.prober import probe_h3, probe_http
from tools.make_certs import make_certs

OK_RANGES = [(200, 399)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_certs(tmp_path_factory.mktemp("h3probe"))


async def test_probe_is_up_on_200_and_down_while_the_backend_answers_503(certs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sick = tmp_path / "sick"
    tls = BackendTlsConfig(ca_path=str(certs.ca_cert), server_name="localhost")
    with scripted_h3(certs, health_file=str(sick)) as port:
        plan = h3_plan(port, tls)
        assert await probe_h3(plan, "/healthz", "svc", OK_RANGES, "200-399", 2.0) == ""
        sick.touch()
        problem = await probe_h3(plan, "/healthz", "svc", OK_RANGES, "200-399", 2.0)
        assert problem == "status 503 not in 200-399"


async def test_probe_http_dispatches_h3_backends_to_the_h3_probe(certs) -> None:  # type: ignore[no-untyped-def]
    listener: Any = SimpleNamespace(
        health=HealthConfig(kind="http", path="/status/204", expected_status="204")
    )
    tls = BackendTlsConfig(ca_path=str(certs.ca_cert), server_name="localhost")
    async with hypercorn_h3(certs) as port:
        assert await probe_http(h3_plan(port, tls), listener, 2.0) == ""
        listener.health = HealthConfig(kind="http", path="/status/500", expected_status="204")
        assert await probe_http(h3_plan(port, tls), listener, 2.0) == "status 500 not in 204"


async def test_probe_with_an_untrusted_certificate_is_down(certs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = make_certs(tmp_path / "other")
    with scripted_h3(certs) as port:
        plan = h3_plan(port, BackendTlsConfig(ca_path=str(other.ca_cert)))
        problem = await probe_h3(plan, "/healthz", "svc", OK_RANGES, "200-399", 2.0)
        assert problem.startswith("connection closed"), problem
        assert "certificate" in problem.lower()


async def test_probe_of_a_port_nobody_serves_is_down(certs) -> None:  # type: ignore[no-untyped-def]
    with scripted_h3(certs) as port:
        pass
    plan = h3_plan(port, BackendTlsConfig(ca_path=str(certs.ca_cert), server_name="localhost"))
    problem = await probe_h3(plan, "/healthz", "svc", OK_RANGES, "200-399", 1.0)
    assert problem.startswith("connect:"), problem
