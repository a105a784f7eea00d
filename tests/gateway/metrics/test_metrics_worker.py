"""WorkerMetrics records what the hot path reports, and its snapshot survives msgpack."""

from __future__ import annotations

import msgspec
import pytest

from gateway.metrics import WorkerMetrics, decode_snapshot, encode_snapshot, status_class
from gateway.metrics import families as fam


@pytest.mark.parametrize(
    ("status", "klass"),
    [
        (101, "1xx"),
        (200, "2xx"),
        (204, "2xx"),
        (304, "3xx"),
        (404, "4xx"),
        (503, "5xx"),
        (599, "5xx"),
        (0, "5xx"),
        (600, "5xx"),
    ],
)
def test_status_class(status: int, klass: str) -> None:
    assert status_class(status) == klass


def test_request_done_counts_status_class_latency_and_bytes() -> None:
    m = WorkerMetrics()
    m.request_done("web", "b1", 200, 0.003, 100, 2000)
    m.request_done("web", "b1", 201, 0.0005, 10, 0)  # equal to a bound lands in that bucket
    m.request_done("web", "b2", 502, 120.0, 0, 50)  # beyond the last bound: +Inf bucket
    snap = m.snapshot()
    reqs = snap.counters[fam.REQUESTS.name]
    assert reqs == {("web", "b1", "2xx"): 2, ("web", "b2", "5xx"): 1}
    assert snap.counters[fam.BYTES.name] == {("web", "in"): 110, ("web", "out"): 2050}
    h = snap.histograms[fam.REQUEST_DURATION.name][("web",)]
    buckets = fam.REQUEST_DURATION.buckets
    assert len(h.bucket_counts) == len(buckets) + 1
    assert h.bucket_counts[buckets.index(0.0005)] == 1
    assert h.bucket_counts[buckets.index(0.005)] == 1
    assert h.bucket_counts[-1] == 1
    assert h.count == 3
    assert h.sum == pytest.approx(120.0035)


def test_connections_errors_rejections_and_active_requests() -> None:
    m = WorkerMetrics()
    for _ in range(3):
        m.connection_opened("web")
    m.connection_closed("web")
    m.upstream_error("web", "b1", "connect_refused")
    m.upstream_error("web", "b1", "connect_refused")
    m.security_rejection("header_too_large")
    m.backend_active_requests("web", "b1", +1)
    m.backend_active_requests("web", "b1", +1)
    m.backend_active_requests("web", "b1", -1)
    m.bytes_transferred("tcp", 7, 9)
    m.requests[("web", "b1", "4xx")] += 1  # the documented direct-increment path
    snap = m.snapshot()
    assert snap.counters[fam.CONNECTIONS.name] == {("web",): 3}
    assert snap.gauges[fam.CONNECTIONS_ACTIVE.name] == {("web",): 2}
    assert snap.counters[fam.UPSTREAM_ERRORS.name] == {("web", "b1", "connect_refused"): 2}
    assert snap.counters[fam.SECURITY_REJECTIONS.name] == {("header_too_large",): 1}
    assert snap.gauges[fam.BACKEND_ACTIVE_REQUESTS.name] == {("web", "b1"): 1}
    assert snap.counters[fam.BYTES.name] == {("tcp", "in"): 7, ("tcp", "out"): 9}
    assert snap.counters[fam.REQUESTS.name] == {("web", "b1", "4xx"): 1}


def test_snapshot_is_a_copy() -> None:
    m = WorkerMetrics()
    m.request_done("web", "b1", 200, 0.01, 1, 1)
    snap = m.snapshot()
    m.request_done("web", "b1", 200, 0.01, 1, 1)
    assert snap.counters[fam.REQUESTS.name][("web", "b1", "2xx")] == 1
    assert snap.histograms[fam.REQUEST_DURATION.name][("web",)].count == 1


def test_snapshot_msgpack_roundtrip() -> None:
    m = WorkerMetrics()
    m.request_done("web", "b1", 200, 0.01, 5, 6)
    m.connection_opened("web")
    snap = m.snapshot()
    again = decode_snapshot(encode_snapshot(snap))
    assert again == snap
    assert again.counters[fam.REQUESTS.name][("web", "b1", "2xx")] == 1


def test_decode_rejects_malformed_snapshot() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_snapshot(msgspec.msgpack.encode({"counters": {"x": {("a",): "not-an-int"}}}))
    with pytest.raises(msgspec.ValidationError):
        decode_snapshot(msgspec.msgpack.encode({"unknown_field": 1}))


def test_family_definitions_are_well_formed() -> None:
    names = [f.name for f in fam.FAMILIES]
    assert len(names) == len(set(names))
    for f in fam.FAMILIES:
        assert f.name.startswith(fam.PREFIX)
        assert (f.kind is fam.Kind.COUNTER) == f.name.endswith("_total")
        assert (f.kind is fam.Kind.HISTOGRAM) == bool(f.buckets)
        assert list(f.buckets) == sorted(set(f.buckets))
        assert f.help


def test_requests_counted_between_snapshots_add_up() -> None:
    """Finished requests are counted per listener and folded into the dicts by each snapshot:
    a snapshot sees everything before it, and nothing is counted twice."""
    m = WorkerMetrics()
    statuses = [101, 200, 299, 304, 404, 503, 599, 0, 600, -1]
    for status in statuses:
        m.request_done("web", "b1", status, 0.01, 1, 2)
    first = m.snapshot()
    m.request_done("web", "b1", 200, 0.01, 3, 0)
    m.series("api").request_done("b2", 404, 0.01, 0, 0)
    second = m.snapshot()
    third = m.snapshot()
    by_class: dict[str, int] = {}
    for s in statuses:
        by_class[status_class(s)] = by_class.get(status_class(s), 0) + 1
    assert first.counters[fam.REQUESTS.name] == {
        ("web", "b1", klass): n for klass, n in by_class.items()
    }
    assert first.counters[fam.BYTES.name] == {("web", "in"): 10, ("web", "out"): 20}
    by_class["2xx"] += 1
    assert second.counters[fam.REQUESTS.name] == {
        **{("web", "b1", klass): n for klass, n in by_class.items()},
        ("api", "b2", "4xx"): 1,
    }
    assert second.counters[fam.BYTES.name] == {("web", "in"): 13, ("web", "out"): 20}
    assert third == second
    assert second.histograms[fam.REQUEST_DURATION.name][("web",)].count == len(statuses) + 1
