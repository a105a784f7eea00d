"""gRPC through the real gateway: a grpcio client, the gateway (h2c front, h2 backends), a
grpcio server. One gateway and one backend pair serve the whole module.

Streams keep streaming (a 10 000-message server stream, client streaming, a bidi echo that
only works if responses flow before the request ends), 4 MiB messages pass, statuses and
trailing metadata are relayed exactly, the gateway's own answers are trailers-only gRPC
statuses (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED; UNIMPLEMENTED to an HTTP/1.1
client), deadlines are clamped and forwarded, cancellation and deadline expiry reach the
backend, connect failures are retried, active gRPC health takes a backend out and back, and
the metrics count calls by grpc-status.
"""

from __future__ import annotations

import queue
import re
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_peers import EchoBackend, ResettingBackend, channel, method, wait_until
from running_gateway import RunningGateway, free_port

MIB = 1 << 20
MAX_DEADLINE_MS = 1000


class Setup:
    def __init__(self, gateway: RunningGateway, ports: dict[str, int], admin: int) -> None:
        self.gateway = gateway
        self.ports = ports
        self.admin = admin
        self.backend: EchoBackend
        self.health_backend: EchoBackend
        self.resetting: list[ResettingBackend]

    def channel(self, listener: str = "grpc") -> grpc.Channel:
        return channel(self.ports[listener])


def _config(
    ports: dict[str, int], backend: int, health_backend: int, admin: int, resetting: list[int]
) -> str:
    dead = free_port()  # nothing listens there

    def listener(name: str, backends: list[int], extra: str = "") -> str:
        entries = "".join(
            f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\nprotocol = "h2"\n'
            for p in backends
        )
        return (
            f'\n[[listeners]]\nname = "{name}"\naddress = "127.0.0.1:{ports[name]}"\n'
            f'protocol = "h1"\n{extra}\n{entries}'
        )

    return (
        f"""
[runtime]
workers = 1
drain_timeout_ms = 2000

[observability]
log_format = "json"
metrics_bind = "127.0.0.1:{admin}"
"""
        + listener("grpc", [backend], f"[listeners.http]\ngrpc_max_deadline_ms = {MAX_DEADLINE_MS}")
        + listener("small", [backend], "[listeners.http]\nmax_body_bytes = 1048576")
        + listener("dead", [dead])
        + listener("retry", [dead, backend], "[listeners.outlier]\nconsecutive_failures = 1000")
        + listener("reset", resetting, "[listeners.outlier]\nconsecutive_failures = 1000")
        + listener(
            "health",
            [health_backend],
            """[listeners.balancer]
panic_threshold = 0
[listeners.health]
kind = "grpc"
grpc_service = "test.Echo"
interval_ms = 250
timeout_ms = 250
rise = 1
fall = 1
""",
        )
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    ports = {name: free_port() for name in ("grpc", "small", "dead", "retry", "reset", "health")}
    admin = free_port()
    backend = EchoBackend(free_port()).start()
    health_backend = EchoBackend(free_port()).start()
    resetting = [ResettingBackend(), ResettingBackend()]
    gateway = RunningGateway(
        tmp_path_factory.mktemp("grpc"),
        _config(ports, backend.port, health_backend.port, admin, [r.port for r in resetting]),
    )
    try:
        gateway.start()
        s = Setup(gateway, ports, admin)
        s.backend, s.health_backend, s.resetting = backend, health_backend, resetting
        yield s
    finally:
        gateway.stop()
        backend.stop()
        health_backend.stop()
        for r in resetting:
            r.stop()


def test_unary_relays_message_and_trailing_metadata(setup: Setup) -> None:
    with setup.channel() as ch:
        reply, call = method(ch, "Unary").with_call(b"hello", timeout=10)
    assert reply == b"hello"
    trailers = dict(call.trailing_metadata())
    assert trailers["x-trailer"] == "t-value"
    assert trailers["x-bin-bin"] == b"\x00\x01\xff"
    assert call.code() is grpc.StatusCode.OK


def test_backend_status_details_and_metadata_are_relayed_exactly(setup: Setup) -> None:
    with setup.channel() as ch, pytest.raises(grpc.RpcError) as err:
        method(ch, "Unary")(b"fail:precondition 42 %", timeout=10)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "precondition 42 %"
    assert dict(err.value.trailing_metadata())["x-why"] == "asked-to-fail"


def test_server_stream_of_ten_thousand_messages(setup: Setup) -> None:
    with setup.channel() as ch:
        replies = list(method(ch, "ServerStream")(b"10000:32", timeout=30))
    assert len(replies) == 10_000
    assert all(r == b"%08d" % i + b"x" * 32 for i, r in enumerate(replies))


def test_server_stream_is_flow_controlled_end_to_end(setup: Setup) -> None:
    """A client that stops reading stops the backend: 256 MiB offered in 1 MiB messages,
    the client takes one and pauses; the backend gets only as far as the windows and
    buffers on the way allow (a gateway that buffered the stream would let it finish)."""
    seen = setup.backend.observed
    with setup.channel() as ch:
        call = method(ch, "Flood")(b"256:%d" % MIB, timeout=30)
        first = next(call)
        assert len(first) == MIB
        time.sleep(1.0)
        stalled_at = seen.produced
        time.sleep(0.5)
        assert seen.produced == stalled_at  # stalled, not slow
        assert stalled_at < 32  # direct to the backend: ~6; through the gateway: ~8
        call.cancel()


def test_client_stream(setup: Setup) -> None:
    messages = [b"m" * (i % 100 + 1) for i in range(2000)]
    with setup.channel() as ch:
        reply = method(ch, "ClientStream")(iter(messages), timeout=30)
    assert reply == b"%d:%d" % (len(messages), sum(map(len, messages)))


def test_bidi_echo_answers_each_message_before_the_request_ends(setup: Setup) -> None:
    """The client sends message n+1 only after reading the echo of message n: this can only
    finish if the gateway relays responses while the request stream is still open."""
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (item := outbox.get(timeout=10)) is not None:
            yield item

    with setup.channel() as ch:
        call = method(ch, "Bidi")(requests(), timeout=30)
        outbox.put(b"0")
        got = []
        for i, reply in enumerate(call):
            got.append(reply)
            outbox.put(b"%d" % (i + 1) if i + 1 < 50 else None)
    assert got == [b"echo:%d" % i for i in range(50)]


def test_four_mib_messages_both_ways(setup: Setup) -> None:
    payload = bytes(range(256)) * (4 * MIB // 256)
    with setup.channel() as ch:
        assert method(ch, "Unary")(payload, timeout=30) == payload


def test_deadline_is_clamped_forwarded_and_expiry_resets_the_backend(setup: Setup) -> None:
    """The client allows 30 s; the listener clamps to 1 s: the DEADLINE_EXCEEDED comes from
    the gateway, the backend was told the remaining budget and sees the call cancelled."""
    seen = setup.backend.observed
    seen.cancelled.clear()
    before = len(seen.time_remaining)
    started = time.monotonic()
    with setup.channel() as ch, pytest.raises(grpc.RpcError) as err:
        method(ch, "Wait")(b"x", timeout=30)
    elapsed = time.monotonic() - started
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.details() == "deadline exceeded"  # the gateway's, not the client's own
    assert 0.9 <= elapsed < 5
    remaining = seen.time_remaining[before]
    assert remaining is not None and 0.2 < remaining <= MAX_DEADLINE_MS / 1000
    assert seen.cancelled.wait(3)


def test_deadline_during_a_stream_ends_it_with_a_status_trailer(setup: Setup) -> None:
    """Messages already relayed stay delivered; the stream then ends with the gateway's
    DEADLINE_EXCEEDED trailer (the response had begun: no trailers-only answer)."""
    got = []
    with setup.channel() as ch, pytest.raises(grpc.RpcError) as err:
        for message in method(ch, "SlowStream")(b"50", timeout=30):
            got.append(message)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.details() == "deadline exceeded"
    assert 1 <= len(got) < 50
    assert got == [b"%d" % i for i in range(len(got))]


def test_client_cancellation_reaches_the_backend_and_is_counted_cancelled(setup: Setup) -> None:
    seen = setup.backend.observed
    seen.cancelled.clear()
    seen.started.clear()
    before = _grpc_counts(setup.admin).get(("grpc", "1"), 0)
    with setup.channel() as ch:
        future = method(ch, "Wait").future(b"x")  # no deadline: only the cancel ends it
        assert seen.started.wait(5)
        future.cancel()
        assert seen.cancelled.wait(3)
    assert wait_until(
        lambda: _grpc_counts(setup.admin).get(("grpc", "1"), 0) >= before + 1, 8, step_s=0.25
    ), _grpc_counts(setup.admin)


def _raw_h2_status(port: int, body: bytes) -> dict[bytes, bytes]:
    """The response fields of one gRPC call sent with httpx (h2c) — the head of a
    trailers-only answer carries the status."""
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        r = client.post(
            f"http://127.0.0.1:{port}/test.Echo/Unary",
            content=body,
            headers={"content-type": "application/grpc", "te": "trailers"},
        )
    assert r.status_code == 200
    return {k.encode(): v.encode() for k, v in r.headers.items()}


def test_dead_backend_is_a_trailers_only_unavailable(setup: Setup) -> None:
    with setup.channel("dead") as ch, pytest.raises(grpc.RpcError) as err:
        method(ch, "Unary")(b"x", timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    fields = _raw_h2_status(setup.ports["dead"], b"\x00\x00\x00\x00\x01x")
    assert fields[b"grpc-status"] == b"14"
    assert fields[b"content-type"] == b"application/grpc"


def test_oversized_request_is_resource_exhausted(setup: Setup) -> None:
    with setup.channel("small") as ch, pytest.raises(grpc.RpcError) as err:
        method(ch, "Unary")(b"z" * (2 * MIB), timeout=10)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_connect_failures_are_retried_on_another_backend(setup: Setup) -> None:
    with setup.channel("retry") as ch:
        for i in range(6):
            assert method(ch, "Unary")(b"%d" % i, timeout=10) == b"%d" % i


def test_backend_reset_after_the_request_reached_it_is_unavailable_and_not_retried(
    setup: Setup,
) -> None:
    """Both backends reset every stream once its request bytes arrived: the call must
    fail UNAVAILABLE after exactly one backend saw it (a retry could run it twice)."""
    before = sum(r.requests for r in setup.resetting)
    with setup.channel("reset") as ch, pytest.raises(grpc.RpcError) as err:
        method(ch, "Unary")(b"once", timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sum(r.requests for r in setup.resetting) - before == 1


def test_http1_client_gets_unimplemented_in_the_headers(setup: Setup) -> None:
    with socket.create_connection(("127.0.0.1", setup.ports["grpc"]), timeout=5) as s:
        s.sendall(
            b"POST /test.Echo/Unary HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc\r\n"
            b"content-length: 6\r\n\r\n\x00\x00\x00\x00\x01x"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    head = data.split(b"\r\n\r\n")[0].lower() + b"\r\n"
    assert head.startswith(b"http/1.1 200")
    assert b"\r\ngrpc-status: 12\r\n" in head
    assert b"\r\ncontent-length: 0\r\n" in head


def test_grpc_health_takes_a_backend_down_and_up(setup: Setup) -> None:
    backend = setup.health_backend

    def call_code() -> grpc.StatusCode:
        with setup.channel("health") as ch:
            try:
                method(ch, "Unary")(b"h", timeout=5)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    assert wait_until(lambda: call_code() is grpc.StatusCode.OK, 5)
    backend.set_serving(False)
    try:
        assert wait_until(lambda: call_code() is grpc.StatusCode.UNAVAILABLE, 5)
    finally:
        backend.set_serving(True)
    assert wait_until(lambda: call_code() is grpc.StatusCode.OK, 5)
    changes = [e["current"] for e in setup.gateway.events("backend_health_changed") if e["current"]]
    assert "down" in changes and "up" in changes[changes.index("down") :]


def _grpc_counts(admin: int) -> dict[tuple[str, str], float]:
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    counts = {}
    for m in re.finditer(
        r'^expressgateway_grpc_requests_total\{grpc_status="([^"]+)",listener="([^"]+)"\} (\S+)$',
        text,
        re.M,
    ):
        counts[(m.group(2), m.group(1))] = float(m.group(3))
    return counts


def test_metrics_count_calls_by_grpc_status(setup: Setup) -> None:
    with setup.channel() as ch:
        method(ch, "Unary")(b"count me", timeout=10)
    with setup.channel("dead") as ch, pytest.raises(grpc.RpcError):
        method(ch, "Unary")(b"x", timeout=10)

    def counted() -> bool:
        counts = _grpc_counts(setup.admin)
        return counts.get(("grpc", "0"), 0) >= 1 and counts.get(("dead", "14"), 0) >= 1

    assert wait_until(counted, 8, step_s=0.25), _grpc_counts(setup.admin)


def test_concurrent_calls_share_the_connection(setup: Setup) -> None:
    with setup.channel() as ch:
        unary = method(ch, "Unary")
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(unary(b"%d" % i, timeout=10)))
            for i in range(20)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == sorted(b"%d" % i for i in range(20))
