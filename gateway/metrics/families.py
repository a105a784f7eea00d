"""Every metric family ExpressGateway emits: name, help, kind, labels, histogram buckets.

This module owns the exposition contract (the names a dashboard or an alert may use) and
nothing else. It must never hold values, import prometheus_client, or perform I/O; the
worker recorder, the aggregator, the supervisor exporter and the dashboard test all read
the same table so a name cannot drift between them.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

PREFIX = "expressgateway_"

# The label value that absorbs every series past a family's cardinality ceiling.
OVERFLOW_LABEL_VALUE = "__overflow__"


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Family(msgspec.Struct, frozen=True):
    """One metric family. `name` is the exposed name (counters end in `_total`)."""

    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # upper bounds, ascending, +Inf implied; histograms only


# Request latency: sub-millisecond proxying up to slow uploads/long polls.
REQUEST_DURATION_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Drain budgets are seconds to minutes (the original gateway used the same ladder).
DRAIN_DURATION_BUCKETS_S: tuple[float, ...] = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

# --- worker-side families (recorded by WorkerMetrics, merged by MetricsAggregator) ---
REQUESTS = Family(
    PREFIX + "requests_total",
    "HTTP requests finished, by the real response status class.",
    Kind.COUNTER,
    ("listener", "backend", "code"),
)
HTTP_EXCHANGES = Family(
    PREFIX + "http_exchanges_total",
    "HTTP requests finished, by the client's protocol (front) and the backend's (back; "
    "empty when no backend was reached).",
    Kind.COUNTER,
    ("listener", "front", "back"),
)
GRPC_REQUESTS = Family(
    PREFIX + "grpc_requests_total",
    "gRPC calls finished, by grpc-status (0..16; the gateway's own answers included: 14 "
    "UNAVAILABLE, 4 DEADLINE_EXCEEDED, 8 RESOURCE_EXHAUSTED, 12 UNIMPLEMENTED; 'invalid' for a "
    "backend's non-numeric status).",
    Kind.COUNTER,
    ("listener", "grpc_status"),
)
REQUEST_DURATION = Family(
    PREFIX + "request_duration_seconds",
    "Time from request head received to response fully sent.",
    Kind.HISTOGRAM,
    ("listener",),
    REQUEST_DURATION_BUCKETS_S,
)
CONNECTIONS = Family(
    PREFIX + "connections_total",
    "Client connections accepted.",
    Kind.COUNTER,
    ("listener",),
)
CONNECTIONS_ACTIVE = Family(
    PREFIX + "connections_active",
    "Client connections currently open.",
    Kind.GAUGE,
    ("listener",),
)
BYTES = Family(
    PREFIX + "bytes_total",
    "Payload bytes moved; direction=in is client to gateway, out is gateway to client.",
    Kind.COUNTER,
    ("listener", "direction"),
)
UPSTREAM_ERRORS = Family(
    PREFIX + "upstream_errors_total",
    "Failures talking to a backend, by kind (connect_refused, connect_timeout, reset, ...).",
    Kind.COUNTER,
    ("listener", "backend", "kind"),
)
BACKEND_ACTIVE_REQUESTS = Family(
    PREFIX + "backend_active_requests",
    "Requests currently in flight to a backend.",
    Kind.GAUGE,
    ("listener", "backend"),
)
SECURITY_REJECTIONS = Family(
    PREFIX + "security_rejections_total",
    "Requests or connections refused by a protective limit, by reason.",
    Kind.COUNTER,
    ("reason",),
)

# --- supervisor-side families (recorded by SupervisorMetrics) ---
BACKEND_HEALTHY = Family(
    PREFIX + "backend_healthy",
    "1 when the active health check considers the backend healthy, else 0.",
    Kind.GAUGE,
    ("listener", "backend"),
)
WORKER_RESTARTS = Family(
    PREFIX + "worker_restarts_total",
    "Workers respawned after an unexpected exit.",
    Kind.COUNTER,
)
WORKERS = Family(
    PREFIX + "workers",
    "Worker processes by lifecycle state.",
    Kind.GAUGE,
    ("state",),
)
RELOADS = Family(
    PREFIX + "reloads_total",
    "Configuration reloads by result.",
    Kind.COUNTER,
    ("result",),
)
DRAIN_DURATION = Family(
    PREFIX + "drain_duration_seconds",
    "Time a draining worker generation took to finish.",
    Kind.HISTOGRAM,
    (),
    DRAIN_DURATION_BUCKETS_S,
)
KERNEL_PACKETS = Family(
    PREFIX + "kernel_packets_total",
    "Packets seen by the kernel datapath, per CPU and verdict reason.",
    Kind.COUNTER,
    ("cpu", "reason"),
)
BUILD_INFO = Family(
    PREFIX + "build_info",
    "Always 1; the version label names the running build.",
    Kind.GAUGE,
    ("version",),
)

# --- produced by the aggregator itself ---
SERIES_OVERFLOWED = Family(
    PREFIX + "metric_series_overflowed",
    "Distinct label sets folded into the __overflow__ series at the last scrape, per family.",
    Kind.GAUGE,
    ("family",),
)

FAMILIES: tuple[Family, ...] = (
    REQUESTS,
    HTTP_EXCHANGES,
    GRPC_REQUESTS,
    REQUEST_DURATION,
    CONNECTIONS,
    CONNECTIONS_ACTIVE,
    BYTES,
    UPSTREAM_ERRORS,
    BACKEND_ACTIVE_REQUESTS,
    SECURITY_REJECTIONS,
    BACKEND_HEALTHY,
    WORKER_RESTARTS,
    WORKERS,
    RELOADS,
    DRAIN_DURATION,
    KERNEL_PACKETS,
    BUILD_INFO,
    SERIES_OVERFLOWED,
)

FAMILIES_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}


def family_names() -> frozenset[str]:
    """Every exposed family name (what a dashboard expression may reference)."""
    return frozenset(FAMILIES_BY_NAME)
