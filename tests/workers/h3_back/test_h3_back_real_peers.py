"""The h3 back adapter against real HTTP/3 servers: hypercorn (aioquic under trio) and a
scripted aioquic server (trailers too: hypercorn 0.18 sends a DATA frame after its H3
trailers, which aioquic refuses, so its trailer streams never end). Each test drives ``H3Back.open_exchange`` the way the proxy core
does (upload in a nursery, body read to its end, ``release``)."""

from __future__ import annotations

import hashlib
import json
import resource

import pytest
import trio
from asgi_backend import pattern_bytes
from h2_backends import FedBody, as_backend, assert_no_stream_leak, exchange, get
from h3_backends import h3_plan, hypercorn_h3, running_h3_back, scripted_h3

from gateway.config.schema import BackendTlsConfig
from gateway.http.errors import BadGateway
from gateway.http.h3_upstream import SEND_BUFFER_BYTES, STREAM_WINDOW_BYTES
from gateway.http.limits import BODY_CHUNK_MAX_BYTES, HttpLimits, PoolLimits
from tools.make_certs import make_certs
from workers.http.back import UpstreamRefused
from workers.http.body import BodySource

MIB = 1 << 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_certs(tmp_path_factory.mktemp("h3certs"))


def trusted(certs) -> BackendTlsConfig:  # type: ignore[no-untyped-def]
    return BackendTlsConfig(ca_path=str(certs.ca_cert), server_name="localhost")


async def test_get_reaches_hypercorn_over_h3_on_one_reused_connection(certs) -> None:  # type: ignore[no-untyped-def]
    async with hypercorn_h3(certs) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back:
            answer = await exchange(back, as_backend(plan), get("/headers?x=1"))
            assert answer.status == 200, answer
            seen = json.loads(answer.body)
            assert seen["http_version"] == "3"
            assert seen["path"] == "/headers?x=1"
            again = await exchange(back, as_backend(plan), get("/status/503"))
            assert again.status == 503
            assert len(back.pool.connections(as_backend(plan))) == 1
            assert_no_stream_leak(back, as_backend(plan))  # type: ignore[arg-type]


async def test_unread_download_holds_one_stream_window_then_arrives_whole(certs) -> None:  # type: ignore[no-untyped-def]
    """The backend writes the whole body at once; we hold at most our credit until it is
    read."""
    size = 4 * MIB + 5
    with scripted_h3(certs) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back, trio.open_nursery() as nursery:
            response = await back.open_exchange(
                nursery, as_backend(plan), get(f"/bytes/{size}"), BodySource(0)
            )
            await trio.sleep(0.5)  # the backend sends while nobody reads
            (conn,) = back.pool.connections(as_backend(plan))
            assert conn.buffered_bytes <= STREAM_WINDOW_BYTES
            digest = hashlib.sha256()
            got = 0
            while chunk := await response.body.receive():
                assert len(chunk) <= BODY_CHUNK_MAX_BYTES
                digest.update(chunk)
                got += len(chunk)
            await response.release(complete=True)
            assert got == size
            assert digest.hexdigest() == hashlib.sha256(bytes(size)).hexdigest()
            assert conn.peak_buffered_bytes <= STREAM_WINDOW_BYTES
            nursery.cancel_scope.cancel()


async def test_streamed_upload_keeps_a_bounded_send_backlog(certs) -> None:  # type: ignore[no-untyped-def]
    payload = pattern_bytes(3 * MIB + 3)
    with scripted_h3(certs) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back:
            body = FedBody()
            peak = 0

            async def feed() -> None:
                nonlocal peak
                for i in range(0, len(payload), MIB):
                    await body.feed(payload[i : i + MIB])
                    for conn in back.pool.connections(as_backend(plan)):
                        for stream_id in conn.streams:
                            peak = max(peak, conn.quic.send_backlog(stream_id))
                await body.finish()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                answer = await exchange(back, as_backend(plan), get("/sha", method=b"POST"), body)
            assert json.loads(answer.body) == {
                "sha256": hashlib.sha256(payload).hexdigest(),
                "bytes": len(payload),
            }
            assert 0 < peak <= SEND_BUFFER_BYTES + BODY_CHUNK_MAX_BYTES + 64


async def test_request_trailers_reach_the_backend_and_response_trailers_come_back(certs) -> None:  # type: ignore[no-untyped-def]
    with scripted_h3(certs) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back:
            body = FedBody()

            async def feed() -> None:
                await body.feed(b"x" * 100_000)
                await body.finish([(b"x-digest", b"sha-256=abc")])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                answer = await exchange(back, as_backend(plan), get("/echo", method=b"POST"), body)
            assert answer.body == b"x" * 100_000
            assert answer.trailers == [(b"x-digest", b"sha-256=abc"), (b"x-echo-trailer", b"done")]


@pytest.mark.parametrize(
    "tls",
    [
        pytest.param(lambda certs, other: BackendTlsConfig(ca_path=str(other.ca_cert)), id="ca"),
        pytest.param(
            lambda certs, other: BackendTlsConfig(ca_path=str(certs.ca_cert), server_name="evil"),
            id="name",
        ),
    ],
)
async def test_an_unverifiable_certificate_is_refused(certs, tmp_path, tls) -> None:  # type: ignore[no-untyped-def]
    other = make_certs(tmp_path / "other")
    with scripted_h3(certs) as port:
        plan = h3_plan(port, tls(certs, other))
        async with running_h3_back([plan]) as back:
            with pytest.raises(UpstreamRefused) as caught:
                await exchange(back, as_backend(plan), get("/"))
            assert "certificate" in str(caught.value).lower() or "hostname" in str(caught.value)
            assert caught.value.kind == "tls_handshake"
            unchecked = h3_plan(port, BackendTlsConfig(verify=False, server_name="evil"))
        async with running_h3_back([unchecked]) as back:
            assert (await exchange(back, as_backend(unchecked), get("/"))).status == 200


async def test_a_port_nobody_serves_is_refused_at_once(certs) -> None:  # type: ignore[no-untyped-def]
    with scripted_h3(certs) as port:
        pass  # the process is gone: its port answers with ICMP port unreachable
    plan = h3_plan(port, trusted(certs))
    async with running_h3_back([plan]) as back:
        with trio.fail_after(2):
            with pytest.raises(UpstreamRefused) as caught:
                await exchange(back, as_backend(plan), get("/"))
        assert caught.value.kind == "refused"


async def test_a_full_connection_makes_the_pool_open_another(certs) -> None:  # type: ignore[no-untyped-def]
    """The backend allows 2 streams per connection: 5 concurrent requests need 3."""
    with scripted_h3(certs, max_streams=2) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back:
            bodies: list[bytes] = []

            async def one() -> None:
                bodies.append((await exchange(back, as_backend(plan), get("/slow/400"))).body)

            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(one)
            conns = {b.split()[1] for b in bodies}
            assert len(bodies) == 5
            assert len(conns) == 3


async def test_at_the_pool_cap_requests_wait_for_the_backends_max_streams_to_grow(certs) -> None:  # type: ignore[no-untyped-def]
    """One connection allowed, two streams at a time: four requests still all complete on
    it, the last two once the backend's MAX_STREAMS frame grants more."""
    limits = HttpLimits(pool=PoolLimits(max_per_backend=1))
    with scripted_h3(certs, max_streams=2) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan], limits) as back:
            bodies: list[bytes] = []

            async def one() -> None:
                bodies.append((await exchange(back, as_backend(plan), get("/slow/200"))).body)

            with trio.fail_after(4):
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(one)
            assert len(bodies) == 4
            assert len({b.split()[1] for b in bodies}) == 1


async def test_goaway_refuses_the_unprocessed_stream_and_a_new_connection_serves(certs) -> None:  # type: ignore[no-untyped-def]
    with scripted_h3(certs) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back:
            first = (await exchange(back, as_backend(plan), get("/"))).body.split()[1]
            with trio.fail_after(3):
                with pytest.raises(UpstreamRefused) as caught:
                    await exchange(back, as_backend(plan), get("/goaway/b"))
            assert caught.value.kind == "upstream_goaway"
            after = (await exchange(back, as_backend(plan), get("/goaway/b"))).body.split()[1]
            assert after != first  # the GOAWAY'd connection took no new stream


async def test_a_rejected_stream_is_refused_as_not_processed(certs) -> None:  # type: ignore[no-untyped-def]
    with scripted_h3(certs) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back:
            with trio.fail_after(3):
                with pytest.raises(UpstreamRefused):
                    await exchange(back, as_backend(plan), get("/reject"))
            assert (await exchange(back, as_backend(plan), get("/"))).status == 200


async def test_a_qpack_bomb_from_the_backend_is_refused_before_it_is_decoded(certs) -> None:  # type: ignore[no-untyped-def]
    """A backend's response section of 60 000 references to one 4000-byte dynamic entry
    (~240 MB decoded; the frame itself is under max_header_bytes): a 502-kind failure of
    that stream without decoding it (this process's peak RSS does not rise by the decoded
    size), and the connection serves on."""
    with scripted_h3(certs) as port:
        plan = h3_plan(port, trusted(certs))
        async with running_h3_back([plan]) as back:
            first = (await exchange(back, as_backend(plan), get("/"))).body.split()[1]
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
            for _ in range(3):
                with trio.fail_after(5):
                    with pytest.raises(BadGateway) as caught:
                        await exchange(back, as_backend(plan), get("/qpack-bomb"))
                assert caught.value.kind == "upstream_headers_too_large"
            risen = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
            assert risen * 1024 < 64 * MIB, f"peak RSS rose by {risen / 1024:.1f} MiB"
            after = await exchange(back, as_backend(plan), get("/"))
            assert after.status == 200
            assert after.body.split()[1] == first  # the same connection
