"""The h2 back adapter against a raw h2 server scripted per test: GOAWAY, RST_STREAM both
ways, request trailers, a connection lost mid-body, an oversized response head, timeouts.

The server is the h2 library in the server role; where h2 cannot express the attack (a
GOAWAY that keeps the connection serving) the test writes the frame itself (hyperframe).
"""

from __future__ import annotations

import pytest
import trio
from h2_backends import (
    FedBody,
    RawConn,
    RawStream,
    as_backend,
    assert_no_stream_leak,
    backend_plan,
    exchange,
    get,
    raw_h2_server,
    running_back,
    wait_until,
)
from hyperframe.frame import GoAwayFrame

from gateway.http.errors import BadGateway, GatewayTimeout
from gateway.http.h2_upstream import STREAM_WINDOW_BYTES
from gateway.http.limits import HttpLimits, PoolLimits
from gateway.http.model import HeaderList
from workers.http.back import UpstreamRefused
from workers.http.body import BodySource
from workers.http1.pool import PoolExhausted

CANCEL = 0x8
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7


async def test_goaway_refuses_streams_above_its_last_stream_id_and_lets_the_others_finish() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        if conn.index > 1:
            await conn.respond(rs.id, b"second connection")
            return
        if rs.id != 1:
            return  # never processed: the GOAWAY below names stream 1 as the last
        await wait_until(conn.record, lambda: len(conn.streams) == 3)
        await conn.flush(GoAwayFrame(0, last_stream_id=1, error_code=0).serialize())
        await trio.sleep(0.05)  # the client sees the GOAWAY before stream 1's answer
        await conn.respond(rs.id, b"first, finished after GOAWAY")

    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan]) as back:
            results: dict[str, object] = {}

            async def one(name: str) -> None:
                try:
                    results[name] = (await exchange(back, backend, get("/" + name))).body
                except UpstreamRefused as exc:
                    results[name] = exc

            async with trio.open_nursery() as nursery:
                for name in ("a", "b", "c"):
                    nursery.start_soon(one, name)
                    await trio.sleep(0.02)  # stream ids in this order
            assert results["a"] == b"first, finished after GOAWAY"
            assert isinstance(results["b"], UpstreamRefused)
            assert isinstance(results["c"], UpstreamRefused)
            assert results["b"].kind == "upstream_goaway"
            # The drained connection takes no new stream: the next exchange opens another.
            assert (await exchange(back, backend, get("/d"))).body == b"second connection"
            assert record.connections == 2


async def test_backend_reset_mid_body_raises_instead_of_ending_cleanly() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id, b"x" * 10_000, end=False)
        await trio.sleep(0.05)
        conn.h2.reset_stream(rs.id, error_code=INTERNAL_ERROR)
        await conn.flush()

    async with raw_h2_server(script) as (port, _record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            with pytest.raises(BadGateway) as caught:
                await exchange(back, as_backend(plan), get("/reset"))
            assert caught.value.kind == "upstream_reset"


async def test_refused_stream_before_the_head_is_retry_safe() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        conn.h2.reset_stream(rs.id, error_code=REFUSED_STREAM)
        await conn.flush()

    async with raw_h2_server(script) as (port, _record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            with pytest.raises(UpstreamRefused):
                await exchange(back, as_backend(plan), get("/refused"))


async def test_release_incomplete_resets_only_that_stream_with_cancel() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        if rs.id == 1:
            await conn.respond(rs.id, b"y" * 4096, end=False)  # and never ends
        else:
            await conn.respond(rs.id, b"still serving")

    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan]) as back:
            async with trio.open_nursery() as nursery:
                response = await back.open_exchange(
                    nursery, backend, get("/abandon"), BodySource(0)
                )
                assert await response.body.receive() == b"y" * 4096
                await response.release(complete=False)
                nursery.cancel_scope.cancel()
            await wait_until(record, lambda: (1, CANCEL) in record.resets)
            assert (await exchange(back, backend, get("/next"))).body == b"still serving"
            assert record.connections == 1
            assert_no_stream_leak(back, backend)


async def test_request_trailers_reach_the_backend_after_the_body() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id, b"got %d" % len(rs.body))

    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            body = FedBody(length=None)

            async def feed() -> None:
                await body.feed(b"z" * 100_000)
                await body.finish([(b"x-req-checksum", b"42")])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                head = get("/up", [(b"te", b"trailers")], method=b"POST")
                answer = await exchange(back, as_backend(plan), head, body)
            assert answer.body == b"got 100000"
            (rs,) = record.streams
            assert bytes(rs.body) == b"z" * 100_000
            assert rs.trailers == [(b"x-req-checksum", b"42")]
            assert (b"te", b"trailers") in rs.headers
            assert not any(n == b"content-length" for n, _ in rs.headers)


async def test_known_body_length_is_declared_as_content_length() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id, b"ok")

    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            body = FedBody(length=5)

            async def feed() -> None:
                await body.feed(b"12345")
                await body.finish()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                await exchange(back, as_backend(plan), get("/cl", method=b"PUT"), body)
            (rs,) = record.streams
            assert (b"content-length", b"5") in rs.headers
            assert (b":scheme", b"http") in rs.headers
            assert (b":authority", b"backend.test") in rs.headers


async def test_connection_lost_mid_body_raises_truncated() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id, b"partial", end=False)
        await trio.sleep(0.05)
        await conn.stream.aclose()

    async with raw_h2_server(script) as (port, _record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            with pytest.raises(BadGateway) as caught:
                await exchange(back, as_backend(plan), get("/lost"))
            assert caught.value.kind == "upstream_truncated"


async def test_response_head_timeout_resets_the_stream() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        return  # never answers

    limits = HttpLimits(head_timeout_ms=200)
    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        async with running_back([plan], limits) as back:
            with pytest.raises(GatewayTimeout) as caught:
                await exchange(back, as_backend(plan), get("/silent"))
            assert caught.value.kind == "head_timeout"
            await wait_until(record, lambda: (1, CANCEL) in record.resets)


async def test_oversized_response_head_from_the_backend_is_bounded() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        # 64 fields of 1 KiB each: past our SETTINGS_MAX_HEADER_LIST_SIZE of 16 KiB.
        headers = [(b":status", b"200")] + [(b"x-bomb-%d" % i, b"b" * 1024) for i in range(64)]
        conn.h2.send_headers(rs.id, headers, end_stream=True)
        await conn.flush()

    limits = HttpLimits(max_header_bytes=16 * 1024)
    async with raw_h2_server(script) as (port, _record):
        plan = backend_plan(port)
        async with running_back([plan], limits) as back:
            with pytest.raises(BadGateway) as caught:
                await exchange(back, as_backend(plan), get("/bomb"))
            assert caught.value.kind == "upstream_protocol"


async def test_response_head_with_too_many_fields_fails_that_stream_only() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        count = 40 if rs.id == 1 else 2
        headers = [(b":status", b"200")] + [(b"x-f%d" % i, b"v") for i in range(count)]
        conn.h2.send_headers(rs.id, headers)
        conn.h2.send_data(rs.id, b"body", end_stream=True)
        await conn.flush()

    limits = HttpLimits(max_headers=16)
    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan], limits) as back:
            with pytest.raises(BadGateway) as caught:
                await exchange(back, backend, get("/many"))
            assert caught.value.kind == "upstream_headers_too_large"
            assert (await exchange(back, backend, get("/few"))).body == b"body"
            assert record.connections == 1
            assert_no_stream_leak(back, backend)


async def test_interim_responses_are_skipped() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        conn.h2.send_headers(rs.id, [(b":status", b"103"), (b"link", b"</s.css>")])
        await conn.flush()
        await conn.respond(rs.id, b"final")

    async with raw_h2_server(script) as (port, _record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            answer = await exchange(back, as_backend(plan), get("/hints"))
            assert (answer.status, answer.body) == (200, b"final")


async def test_early_complete_response_with_rst_no_error_stops_the_upload_only() -> None:
    # RFC 9113 §8.1: a server may answer before the request body ended, then reset the stream
    # with NO_ERROR; the response stands and the client stops sending.
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id, b"early answer")
        conn.h2.reset_stream(rs.id, error_code=0)
        await conn.flush()

    async with raw_h2_server(script, on_headers=True) as (port, _record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            body = FedBody(length=None)

            async def feed_forever() -> None:
                while True:
                    await body.feed(b"u" * 8192)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed_forever)
                answer = await exchange(back, as_backend(plan), get("/early", method=b"POST"), body)
                nursery.cancel_scope.cancel()
            assert (answer.status, answer.body) == (200, b"early answer")


async def test_request_trailers_lose_the_fields_http2_forbids() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id, b"ok")

    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        async with running_back([plan]) as back:
            for trailers, expected in (
                ([(b"connection", b"close"), (b"x-ok", b"1")], [(b"x-ok", b"1")]),
                ([(b"transfer-encoding", b"chunked"), (b"content-length", b"4")], []),
            ):
                body = FedBody(length=None)

                async def feed(body: FedBody = body, trailers: HeaderList = trailers) -> None:
                    await body.feed(b"data")
                    await body.finish(trailers)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    with trio.fail_after(5):
                        answer = await exchange(
                            back, as_backend(plan), get("/t", method=b"POST"), body
                        )
                assert answer.body == b"ok"
                assert record.streams[-1].trailers == expected
                assert bytes(record.streams[-1].body) == b"data"


async def test_a_backend_allowing_no_streams_gets_one_connection_and_a_bounded_wait() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id)

    limits = HttpLimits(pool=PoolLimits(connect_timeout_ms=1000))
    async with raw_h2_server(script, max_streams=0) as (port, record):
        plan = backend_plan(port)
        async with running_back([plan], limits) as back:
            with pytest.raises(PoolExhausted):
                await exchange(back, as_backend(plan), get("/none"))
            assert record.connections == 1


async def test_our_settings_reach_the_backend_in_the_first_settings_frame() -> None:
    seen: dict[int, int] = {}

    async def script(conn: RawConn, rs: RawStream) -> None:
        seen.update({int(k): v for k, v in conn.h2.remote_settings.items()})
        await conn.respond(rs.id)

    limits = HttpLimits(max_header_bytes=20_000)
    async with raw_h2_server(script) as (port, _record):
        plan = backend_plan(port)
        async with running_back([plan], limits) as back:
            await exchange(back, as_backend(plan), get("/settings"))
    assert seen[0x2] == 0  # ENABLE_PUSH
    assert seen[0x4] == STREAM_WINDOW_BYTES  # INITIAL_WINDOW_SIZE
    assert seen[0x6] == 20_000  # MAX_HEADER_LIST_SIZE


async def test_upload_stalled_by_a_window_that_never_opens_fails_that_stream() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        return  # reads the request, never acknowledges its DATA, never answers

    limits = HttpLimits(body_timeout_ms=500)
    async with raw_h2_server(script, on_headers=True, ack_data=False) as (port, record):
        plan = backend_plan(port)
        async with running_back([plan], limits) as back:
            body = FedBody(length=None)

            async def feed() -> None:
                for _ in range(32):  # 256 KiB: far past the 64 KiB initial window
                    await body.feed(b"w" * 8192)
                await body.finish()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                with trio.fail_after(5), pytest.raises(BadGateway) as caught:
                    await exchange(back, as_backend(plan), get("/stall", method=b"POST"), body)
                nursery.cancel_scope.cancel()
            assert caught.value.kind == "upstream_write"
            await wait_until(record, lambda: (1, CANCEL) in record.resets)
            assert len(record.streams[0].body) == 65_535


async def test_keepalive_closes_a_connection_whose_backend_stopped_answering_pings() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id)
        conn.frozen = True  # hung: reads nothing more, answers no PING

    async with raw_h2_server(script) as (port, _record):
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan], ping_interval_s=0.1, ping_timeout_s=0.2) as back:
            assert (await exchange(back, backend, get("/then-hang"))).status == 200
            assert len(back.pool.connections(backend)) == 1
            with trio.fail_after(3):
                while back.pool.connections(backend):
                    await trio.sleep(0.05)


async def test_a_head_h2_refuses_to_send_fails_that_exchange_and_retires_the_connection() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        await conn.respond(rs.id)

    async with raw_h2_server(script) as (port, record):
        plan = backend_plan(port)
        backend = as_backend(plan)
        async with running_back([plan]) as back:
            await exchange(back, backend, get("/warm"))
            with pytest.raises(BadGateway) as caught:
                # A pseudo-header among the fields: h2 refuses it after encoding the others.
                await exchange(back, backend, get("/bad", [(b"x-first", b"1"), (b":bogus", b"x")]))
            assert caught.value.kind == "upstream_request"
            assert_no_stream_leak(back, backend)
            # Its HPACK encoder saw fields the backend never did: the next stream goes to a
            # fresh connection, and the backend never sees a block it cannot decode.
            assert (await exchange(back, backend, get("/after"))).status == 200
            assert record.connections == 2
