"""The h1s handler's front dispatch, in process over loopback with real TLS clients: ALPN
`h2` reaches the front registered as "h2" in workers.http.registry (a stand-in here; h2 is
offered only when one is registered, and not when `alpn = ["http/1.1"]`), `http/1.1` or no ALPN reaches the HTTP/1.1
front; the ClientConn carries scheme https, the client's SNI and the ALPN result."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from gateway.config.plan import GatewayPlan, compile_config
from gateway.metrics.worker import WorkerMetrics
from tools.make_certs import CertFiles, make_certs
from workers.access_log import AccessLog
from workers.http.front import ClientConn, FrontHandler
from workers.http.registry import FRONTS, FrontKit
from workers.worker import ListenerRuntime

H2_FRONT_REPLY = b"the registered h2 front\n"


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path / "certs", extra={"api": ["api.example.com"]})


def plan_for(certs: CertFiles, alpn: str = "") -> GatewayPlan:
    d = certs.cert.parent
    text = f"""
[[listeners]]
name = "web"
address = "127.0.0.1:8443"
protocol = "h1s"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
{alpn}
[[listeners.tls.certificates]]
server_names = ["api.example.com"]
cert_path = "{d / "api.pem"}"
key_path = "{d / "api.key"}"
[[listeners.backends]]
address = "127.0.0.1:9"
"""
    return compile_config(text.encode(), online_cpus=[0])


@pytest.fixture
def h2_registered(monkeypatch: pytest.MonkeyPatch) -> list[ClientConn]:
    """A stand-in "h2" front that records its ClientConn and answers one line."""
    seen: list[ClientConn] = []

    def factory(kit: FrontKit) -> FrontHandler:
        async def front(conn: ClientConn) -> None:
            seen.append(conn)
            await conn.stream.send_all(H2_FRONT_REPLY)
            await conn.stream.aclose()

        return front

    monkeypatch.setitem(FRONTS, "h2", factory)
    return seen


async def exchange(
    plan: GatewayPlan,
    certs: CertFiles,
    sni: str | None,
    alpn: list[str] | None,
    send: bytes,
    client_max: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> tuple[str | None, bytes]:
    """Serve one connection with the listener's real handler; (ALPN the client got, reply)."""
    worker = SimpleNamespace(
        boot=SimpleNamespace(plan=plan),
        metrics=WorkerMetrics(),
        access_log=AccessLog(enabled=False),
    )
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    runtime = ListenerRuntime(plan.listeners[0], listener, worker)  # type: ignore[arg-type]
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.check_hostname = False
    ctx.maximum_version = client_max
    if alpn:
        ctx.set_alpn_protocols(alpn)
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            sock, addr = await listener.accept()
            with sock:
                await runtime.handler(sock, addr)

        nursery.start_soon(serve)
        tcp = await trio.open_tcp_stream(*listener.getsockname())
        client = trio.SSLStream(tcp, ctx, server_hostname=sni, https_compatible=True)
        await client.do_handshake()
        negotiated = client.selected_alpn_protocol()
        await client.send_all(send)
        reply = b""
        with trio.fail_after(10):
            while chunk := await client.receive_some(65536):
                reply += chunk
        await client.aclose()
    listener.close()
    return negotiated, reply


GET = b"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"


async def test_alpn_h2_reaches_the_registered_front(
    certs: CertFiles, h2_registered: list[ClientConn]
) -> None:
    negotiated, reply = await exchange(
        plan_for(certs), certs, "api.example.com", ["h2", "http/1.1"], b""
    )
    assert (negotiated, reply) == ("h2", H2_FRONT_REPLY)
    (conn,) = h2_registered
    assert (conn.scheme, conn.sni, conn.alpn, conn.client_ip, conn.preread) == (
        b"https",
        "api.example.com",
        "h2",
        "127.0.0.1",
        b"",
    )


@pytest.mark.parametrize("alpn", [["http/1.1"], None])
async def test_http11_or_no_alpn_reaches_the_h1_front(
    certs: CertFiles, h2_registered: list[ClientConn], alpn: list[str] | None
) -> None:
    negotiated, reply = await exchange(plan_for(certs), certs, "api.example.com", alpn, GET)
    assert negotiated == (alpn[0] if alpn else None)
    assert reply.startswith(b"HTTP/1.1 503 "), reply  # the H1 proxy: no backend answers
    assert h2_registered == []


async def test_alpn_key_turns_h2_off(certs: CertFiles, h2_registered: list[ClientConn]) -> None:
    plan = plan_for(certs, 'alpn = ["http/1.1"]')
    negotiated, reply = await exchange(plan, certs, "api.example.com", ["h2", "http/1.1"], GET)
    assert negotiated == "http/1.1"
    assert reply.startswith(b"HTTP/1.1 503 "), reply
    assert h2_registered == []


async def test_tls13_only_refuses_a_tls12_client(certs: CertFiles) -> None:
    plan = plan_for(certs, "tls13_only = true")
    with pytest.raises(ExceptionGroup) as refused:
        await exchange(plan, certs, "api.example.com", None, GET, ssl.TLSVersion.TLSv1_2)
    # The client was told why (the alert is flushed), not just cut off.
    (broken,) = refused.value.exceptions
    assert isinstance(broken, trio.BrokenResourceError)
    assert "PROTOCOL_VERSION" in str(broken.__cause__), broken.__cause__
    _, reply = await exchange(plan, certs, "api.example.com", None, GET)
    assert reply.startswith(b"HTTP/1.1 503 "), reply


async def test_h2_is_not_offered_without_an_h2_front(
    certs: CertFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(FRONTS, "h2")
    negotiated, reply = await exchange(
        plan_for(certs), certs, "api.example.com", ["h2", "http/1.1"], GET
    )
    assert negotiated == "http/1.1"
    assert reply.startswith(b"HTTP/1.1 503 "), reply
