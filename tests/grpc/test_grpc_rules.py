"""The pure gRPC pieces: detection, the grpc-timeout grammar and clamp, the status the
gateway answers each of its errors with, the metrics label, the config keys, and the
health probe's hand-written protobuf checked against the real generated messages."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from gateway.config.load import load_config
from gateway.config.locate import locate_lines
from gateway.config.validate import collect_problems
from gateway.health.grpc_probe import check_request_message, serving_status, unframe
from gateway.http import grpc_status as gs
from gateway.http.errors import (
    BadGateway,
    BadRequest,
    BodyTooLarge,
    GatewayTimeout,
    HeadersTooLarge,
    NoBackend,
    NotImplementedMethod,
    RequestTimeout,
)
from gateway.http.grpc_deadline import (
    format_timeout,
    parse_timeout,
    request_deadline_s,
    with_timeout,
)
from workers.http.back import UpstreamLost, UpstreamRefused
from workers.http1.backend import ConnectFailed, ConnectTimedOut


@pytest.mark.parametrize(
    ("value", "grpc"),
    [
        (b"application/grpc", True),
        (b"application/grpc+proto", True),
        (b"Application/GRPC; charset=utf-8", True),
        (b"application/grpc-web", False),
        (b"application/grpc-web+proto", False),
        (b"application/grpcx", False),
        (b"application/json", False),
    ],
)
def test_grpc_is_detected_by_content_type(value: bytes, grpc: bool) -> None:
    assert gs.is_grpc([(b"te", b"trailers"), (b"content-type", value)]) is grpc
    assert gs.is_grpc([(b"te", b"trailers")]) is False


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"30S", 30.0),
        (b"250m", 0.25),
        (b"100u", 1e-4),
        (b"99999999n", 0.099999999),
        (b"123456789S", None),  # 9 digits
        (b"10", None),
        (b"S", None),
        (b"-1S", None),
        (b"1.5S", None),
        (b"10x", None),
    ],
)
def test_grpc_timeout_grammar(value: bytes, seconds: float | None) -> None:
    parsed = parse_timeout(value)
    assert parsed == pytest.approx(seconds) if seconds is not None else parsed is None


def test_deadline_is_clamped_and_absent_or_invalid_means_none() -> None:
    assert request_deadline_s([(b"grpc-timeout", b"10S")], 300.0) == 10.0
    assert request_deadline_s([(b"grpc-timeout", b"1H")], 300.0) == 300.0
    assert request_deadline_s([(b"grpc-timeout", b"bogus")], 300.0) is None
    assert request_deadline_s([], 300.0) is None


@pytest.mark.parametrize(
    ("remaining_s", "wire"),
    [
        (0.5, b"500000u"),
        (99.999999, b"99999999u"),
        (250.0, b"250000m"),
        (1_000_000.0, b"1000000S"),
        (-1.0, b"0u"),
        (1e12, b"99999999H"),
    ],
)
def test_remaining_budget_encoding_round_trips(remaining_s: float, wire: bytes) -> None:
    assert format_timeout(remaining_s) == wire
    parsed = parse_timeout(wire)
    assert parsed is not None
    if 0 <= remaining_s < 1e9:
        assert parsed == pytest.approx(remaining_s, rel=1e-3)


def test_forwarded_headers_carry_exactly_one_grpc_timeout() -> None:
    out = with_timeout([(b"grpc-timeout", b"10S"), (b"x", b"1")], 1.5)
    assert out == [(b"x", b"1"), (b"grpc-timeout", b"1500000u")]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NoBackend("none"), gs.UNAVAILABLE),
        (ConnectFailed("refused"), gs.UNAVAILABLE),
        (ConnectTimedOut("slow"), gs.UNAVAILABLE),
        (UpstreamRefused("refused stream"), gs.UNAVAILABLE),
        (UpstreamLost("died"), gs.UNAVAILABLE),
        (BadGateway("reset", kind="upstream_reset"), gs.UNAVAILABLE),
        (GatewayTimeout("head", kind="head_timeout"), gs.UNAVAILABLE),
        (GatewayTimeout("deadline", kind=gs.DEADLINE_KIND), gs.DEADLINE_EXCEEDED),
        (GatewayTimeout("total", kind="total_timeout"), gs.DEADLINE_EXCEEDED),
        (RequestTimeout("slow body", kind="body_timeout"), gs.DEADLINE_EXCEEDED),
        (BodyTooLarge("big"), gs.RESOURCE_EXHAUSTED),
        (HeadersTooLarge("big"), gs.RESOURCE_EXHAUSTED),
        (NotImplementedMethod("h1", kind="grpc_over_h1"), gs.UNIMPLEMENTED),
        (BadRequest("malformed"), gs.INTERNAL),
    ],
)
def test_gateway_errors_map_to_grpc_statuses(error: Exception, code: int) -> None:
    assert gs.status_for_error(error) == code  # type: ignore[arg-type]


def test_trailers_only_answer_is_http_200_with_an_encoded_message() -> None:
    head = gs.trailers_only(gs.UNAVAILABLE, NoBackend("no backend: 100% down\n"))
    assert head.status == 200
    assert head.headers == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"14"),
        (b"grpc-message", b"no backend: 100%25 down%0A"),
    ]


@pytest.mark.parametrize(
    ("raw", "http_status", "label"),
    [
        (b"0", 200, "0"),
        (b"16", 200, "16"),
        (b"17", 200, gs.INVALID_LABEL),
        (b"abc", 200, gs.INVALID_LABEL),
        (None, 200, "2"),
        (None, 404, "12"),
        (None, 503, "14"),
        (None, 401, "16"),
    ],
)
def test_metric_label_is_bounded(raw: bytes | None, http_status: int, label: str) -> None:
    assert gs.status_label(raw, http_status) == label


def test_status_is_read_from_trailers_before_the_head() -> None:
    assert gs.grpc_status_of([(b"grpc-status", b"5")], [(b"grpc-status", b"0")]) == b"0"
    assert gs.grpc_status_of([(b"grpc-status", b"5")], []) == b"5"
    assert gs.grpc_status_of([], []) is None


@pytest.mark.parametrize("service", ["", "test.Echo", "ü" * 100])
def test_health_request_bytes_equal_the_generated_message(service: str) -> None:
    framed = check_request_message(service)
    expected = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    assert unframe(framed) == expected


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_health_response_status_is_read_like_the_generated_parser(status: int) -> None:
    message = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    assert serving_status(message) == status
    # Unknown fields before it are skipped (protobuf forward compatibility).
    assert serving_status(b"\x12\x03abc\x28\x07" + message) == status


@pytest.mark.parametrize("bad", [b"\x08", b"\x12\x05ab", b"\x0b"])
def test_malformed_health_response_is_an_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        serving_status(bad)


def _problems(text: str) -> list[str]:
    config = load_config(text.encode())
    return [p.render() for p in collect_problems(config, online_cpus=[0], lines=locate_lines(text))]


def _listener(extra: str, protocol: str = "h2") -> str:
    return (
        '[[listeners]]\nname = "g"\naddress = "127.0.0.1:7000"\nprotocol = "h1"\n'
        f'{extra}\n[[listeners.backends]]\naddress = "127.0.0.1:7001"\nprotocol = "{protocol}"\n'
    )


def test_grpc_config_keys_are_validated() -> None:
    ok = '[listeners.health]\nkind = "grpc"\ngrpc_service = "pkg.Svc"\n'
    assert _problems(_listener(ok + "[listeners.http]\ngrpc_max_deadline_ms = 1000\n")) == []
    assert _problems(_listener("[listeners.http]\ngrpc_max_deadline_ms = 0\n")) == [
        "listeners[0].http.grpc_max_deadline_ms: must be 1..86400000, got 0 (line 6)"
    ]
    h1 = _problems(_listener('[listeners.health]\nkind = "grpc"\n', protocol="h1"))
    assert h1 == [
        'listeners[0].health.kind: "grpc" checks speak HTTP/2: backends[0] has protocol '
        '\'h1\'; allowed: "h2" (or use kind = "http" / "tcp") (line 6)'
    ]
    wrong_kind = _problems(_listener('[listeners.health]\nkind = "http"\ngrpc_service = "x"\n'))
    assert wrong_kind == [
        'listeners[0].health.grpc_service: applies only to kind = "grpc" checks (line 7)'
    ]
    path = _problems(_listener('[listeners.health]\nkind = "grpc"\npath = "/x"\n'))
    assert path == [
        'listeners[0].health: path and expected_status do not apply to kind = "grpc" checks '
        "(line 5)"
    ]
