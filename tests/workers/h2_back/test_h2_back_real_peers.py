"""The h2 back adapter against real HTTP/2 servers: hypercorn (h2c and TLS) and nginx.

Each test drives ``H2Back.open_exchange`` the way the proxy core does (upload in a nursery,
body read to its end, ``release``) against a backend listening on loopback.
"""

from __future__ import annotations

import msgspec
import pytest
import trio
from h2_backends import (
    MIB,
    FedBody,
    NginxH2Backend,
    as_backend,
    assert_no_stream_leak,
    backend_plan,
    exchange,
    get,
    hypercorn_backend,
    running_back,
)

from gateway.config.schema import BackendTlsConfig
from gateway.http.h2_upstream import STREAM_WINDOW_BYTES
from gateway.http.limits import HttpLimits, PoolLimits
from tools.make_certs import make_certs
from workers.dial import open_backend_stream
from workers.http.back import UpstreamRefused
from workers.http.body import BodySource
from workers.http.h2_back import H2Back
from workers.http1.backend import Backend


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_certs(tmp_path_factory.mktemp("h2certs"))


async def test_get_over_h2c_prior_knowledge_to_hypercorn() -> None:
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            answer = await exchange(back, as_backend(plan), get("/hello"))
            assert answer.status == 200
            assert answer.body == b"hello /hello"
            assert (b"x-http-version", b"2") in answer.headers
            again = await exchange(back, as_backend(plan), get("/again"))
            assert again.body == b"hello /again"
            assert len(back.pool.connections(as_backend(plan))) == 1  # reused, multiplexed


async def test_get_over_tls_with_alpn_h2_to_hypercorn(certs) -> None:  # type: ignore[no-untyped-def]
    async with hypercorn_backend(certs=certs) as port:
        plan = backend_plan(port, BackendTlsConfig(ca_path=str(certs.ca_cert)))
        async with running_back([plan]) as back:
            answer = await exchange(back, as_backend(plan), get("/tls"))
            assert answer.status == 200
            assert answer.body == b"hello /tls"
            (conn,) = back.pool.connections(as_backend(plan))
            assert conn.scheme == b"https"


async def test_tls_backend_that_does_not_select_h2_is_refused_with_a_clear_error(certs) -> None:  # type: ignore[no-untyped-def]
    async with hypercorn_backend(certs=certs, alpn=["http/1.1"]) as port:
        plan = backend_plan(port, BackendTlsConfig(ca_path=str(certs.ca_cert)))
        async with running_back([plan]) as back:
            with pytest.raises(UpstreamRefused) as caught:
                await exchange(back, as_backend(plan), get("/hello"))
            assert caught.value.kind == "alpn"
            assert "did not select h2" in str(caught.value)


async def test_tls_backend_with_an_untrusted_certificate_is_refused(certs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = make_certs(tmp_path / "other")
    async with hypercorn_backend(certs=certs) as port:
        plan = backend_plan(port, BackendTlsConfig(ca_path=str(other.ca_cert)))
        async with running_back([plan]) as back:
            with pytest.raises(UpstreamRefused) as caught:
                await exchange(back, as_backend(plan), get("/hello"))
            assert caught.value.kind == "tls_handshake"


async def test_connect_refused_is_retry_safe() -> None:
    plan = backend_plan(1)  # nothing listens on port 1
    async with running_back([plan]) as back:
        with pytest.raises(UpstreamRefused):
            await exchange(back, as_backend(plan), get("/hello"))


async def test_post_with_a_streamed_body_of_unknown_length_is_echoed() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, more than the backend's initial window
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            body = FedBody(length=None)

            async def feed() -> None:
                for i in range(0, len(payload), 50_000):
                    await body.feed(payload[i : i + 50_000])
                await body.finish()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                answer = await exchange(back, as_backend(plan), get("/echo", method=b"POST"), body)
            assert answer.status == 200
            assert (b"x-received-bytes", str(len(payload)).encode()) in answer.headers
            assert answer.body == payload


async def test_response_trailers_from_hypercorn_reach_the_body_source() -> None:
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            answer = await exchange(
                back, as_backend(plan), get("/trailers", [(b"te", b"trailers")])
            )
            assert answer.body == b"with trailers"
            assert answer.trailers == [(b"x-checksum", b"abc123")]


async def test_more_concurrent_requests_than_max_concurrent_streams_open_another_connection() -> (
    None
):
    async with hypercorn_backend(max_streams=2) as port:
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan]) as back:
            answers = []
            peak_connections = 0

            async def one(i: int) -> None:
                answers.append(await exchange(back, backend, get(f"/slow?{i}")))

            async def watch() -> None:
                nonlocal peak_connections
                while True:
                    conns = back.pool.connections(backend)
                    peak_connections = max(peak_connections, len(conns))
                    for conn in conns:
                        assert conn.active <= 2  # never past the backend's SETTINGS
                    await trio.sleep(0.01)

            async with trio.open_nursery() as outer:
                outer.start_soon(watch)
                async with trio.open_nursery() as nursery:
                    for i in range(6):
                        nursery.start_soon(one, i)
                outer.cancel_scope.cancel()
            assert [a.status for a in answers] == [200] * 6
            assert peak_connections >= 2


async def test_streams_beyond_the_pool_cap_wait_for_a_slot_then_succeed() -> None:
    limits = HttpLimits(pool=PoolLimits(max_per_backend=1, connect_timeout_ms=5000))
    async with hypercorn_backend(max_streams=2) as port:
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan], limits) as back:
            answers = []

            async def one(i: int) -> None:
                answers.append(await exchange(back, backend, get(f"/slow?{i}")))

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(one, i)
            assert [a.status for a in answers] == [200] * 4
            assert len(back.pool.connections(backend)) == 1


async def test_idle_connection_is_closed_after_idle_timeout() -> None:
    limits = HttpLimits(pool=PoolLimits(idle_timeout_s=1.0))
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan], limits) as back:
            await exchange(back, backend, get("/hello"))
            assert len(back.pool.connections(backend)) == 1
            with trio.fail_after(6):
                while back.pool.connections(backend):
                    await trio.sleep(0.05)
            assert (await exchange(back, backend, get("/after"))).body == b"hello /after"


@pytest.mark.slow
async def test_slow_consumer_of_64_mib_keeps_buffering_within_the_stream_window() -> None:
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan]) as back:
            async with trio.open_nursery() as nursery:
                response = await back.open_exchange(nursery, backend, get("/big/64"), BodySource(0))
                assert response.body.length == 64 * MIB
                (conn,) = back.pool.connections(backend)
                total = 0
                reads = 0
                while chunk := await response.body.receive():
                    total += len(chunk)
                    reads += 1
                    if reads % 64 == 0:
                        await trio.sleep(0.01)  # a consumer slower than the backend
                        assert conn.buffered_bytes <= STREAM_WINDOW_BYTES
                await response.release(complete=True)
                nursery.cancel_scope.cancel()
            assert total == 64 * MIB
            # The backend filled the window while we dawdled, and never went past it.
            assert STREAM_WINDOW_BYTES // 2 < conn.peak_buffered_bytes <= STREAM_WINDOW_BYTES


async def test_nginx_http2_over_tls_as_backend(certs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    nginx = NginxH2Backend(tmp_path / "nginx", certs).start()
    try:
        plan = backend_plan(nginx.port, BackendTlsConfig(ca_path=str(certs.ca_cert)))
        backend = as_backend(plan)
        async with running_back([plan]) as back:
            answers = []

            async def one(path: str) -> None:
                answers.append(await exchange(back, backend, get(path)))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(one, "/hello")
                    nursery.start_soon(one, "/big.bin")
            hello = [a for a in answers if a.body.startswith(b"nginx")]
            big = [a for a in answers if not a.body.startswith(b"nginx")]
            assert [a.body for a in hello] == [b"nginx over h2 HTTP/2.0"] * 3
            assert all((b"x-served-by", b"nginx") in a.headers for a in hello)
            assert [len(a.body) for a in big] == [3 * MIB] * 3
            # nginx allowed 4 streams per connection: 6 concurrent exchanges needed two.
            assert 1 <= len(back.pool.connections(backend)) <= 2
    finally:
        nginx.stop()


async def test_idle_connections_beyond_max_idle_are_closed_at_once() -> None:
    limits = HttpLimits(pool=PoolLimits(max_idle_per_backend=0))
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan], limits) as back:
            assert (await exchange(back, backend, get("/one"))).status == 200
            with trio.fail_after(3):
                while back.pool.connections(backend):
                    await trio.sleep(0.02)
            assert (await exchange(back, backend, get("/two"))).body == b"hello /two"


async def test_many_exchanges_finished_or_abandoned_leave_no_slot_or_buffer_behind() -> None:
    async with hypercorn_backend(max_streams=5) as port:
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan]) as back:
            statuses: list[int] = []

            async def complete(i: int) -> None:
                statuses.append((await exchange(back, backend, get(f"/c{i}"))).status)

            async def abandon() -> None:
                async with trio.open_nursery() as nursery:
                    response = await back.open_exchange(
                        nursery, backend, get("/big/1"), BodySource(0)
                    )
                    await response.body.receive()
                    await response.release(complete=False)
                    nursery.cancel_scope.cancel()
                statuses.append(response.head.status)

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(complete if i % 4 else abandon, *((i,) if i % 4 else ()))
            assert statuses == [200] * 40
            assert len(back.pool.connections(backend)) >= 2
            assert_no_stream_leak(back, backend)


async def test_keepalive_pings_are_acked_and_keep_a_quiet_connection() -> None:
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan], ping_interval_s=0.1, ping_timeout_s=5.0) as back:
            await exchange(back, backend, get("/first"))
            (conn,) = back.pool.connections(backend)
            await trio.sleep(0.6)
            assert conn.pings_acked >= 2
            assert back.pool.connections(backend) == [conn]
            assert (await exchange(back, backend, get("/later"))).body == b"hello /later"


async def test_built_without_serve_or_connect_it_hosts_itself_and_speaks_h2c() -> None:
    # How workers/http/registry builds back adapters: synchronously, (limits, connect=None).
    async with hypercorn_backend() as port:
        backend = as_backend(backend_plan(port))
        back = H2Back(HttpLimits(), None)
        try:
            assert (await exchange(back, backend, get("/self-hosted"))).status == 200
            assert len(back.pool.connections(backend)) == 1
        finally:
            await back.aclose()
        with trio.fail_after(2):
            while back.pool.connections(backend):
                await trio.sleep(0.02)


async def test_a_tls_connect_without_alpn_h2_is_refused_clearly(certs) -> None:  # type: ignore[no-untyped-def]
    async with hypercorn_backend(certs=certs) as port:
        plan = backend_plan(port, BackendTlsConfig(ca_path=str(certs.ca_cert)))

        h1_plan = msgspec.structs.replace(plan, protocol="h1")

        async def h1_style_connect(backend: Backend) -> trio.abc.Stream:
            return await open_backend_stream(h1_plan)  # TLS as for h1 backends: no ALPN

        back = H2Back(HttpLimits(), h1_style_connect)
        try:
            with pytest.raises(UpstreamRefused) as caught:
                await exchange(back, as_backend(plan), get("/hello"))
            assert caught.value.kind == "alpn"
        finally:
            await back.aclose()


async def test_full_duplex_echo_streams_back_while_the_upload_runs() -> None:
    payload = bytes(range(256)) * 2735  # 700 KB, past every initial window
    async with hypercorn_backend() as port:
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            body = FedBody(length=len(payload))

            async def feed() -> None:
                for i in range(0, len(payload), 65536):
                    await body.feed(payload[i : i + 65536])
                await body.finish()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                answer = await exchange(
                    back, as_backend(plan), get("/duplex", method=b"POST"), body
                )
            assert answer.status == 200
            assert answer.body == payload


async def test_a_self_hosted_pool_with_nothing_to_host_ends_its_task_and_restarts() -> None:
    limits = HttpLimits(pool=PoolLimits(idle_timeout_s=0.3))
    async with hypercorn_backend() as port:
        backend = as_backend(backend_plan(port))
        back = H2Back(limits)
        try:
            assert (await exchange(back, backend, get("/one"))).status == 200
            with trio.fail_after(5):
                while back.pool.serving:  # idle connection closed, then the task ends
                    await trio.sleep(0.05)
            assert not back.pool.connections(backend)
            assert (await exchange(back, backend, get("/two"))).body == b"hello /two"
        finally:
            await back.aclose()
