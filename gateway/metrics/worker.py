"""The worker's in-process metric recorder: plain integers in dicts keyed by label tuples.

Owns the cheap per-event updates a worker's hot path makes and the `snapshot()` it sends
to the supervisor. It must never lock, allocate per call beyond a label tuple, log, read a
clock (durations are measured by the caller), or know about prometheus_client.

A finished request is counted in its listener's `ListenerSeries` instead: plain integers
per backend and status class, and the listener's histogram itself, with no label tuple
built or hashed per request (issue 18: the dict updates cost ~3% of a proxied request).
`snapshot()` first folds what the series counted into the dicts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Final

from gateway.metrics import families as fam
from gateway.metrics.snapshot import HistogramValue, Labels, MetricsSnapshot, new_histogram

_DURATION_BUCKETS: Final = fam.REQUEST_DURATION.buckets

_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    """HTTP status -> "1xx".."5xx"; anything outside 100..599 is reported as "5xx"
    because the gateway could not produce a valid answer for it."""
    return _STATUS_CLASSES[_class_index(status)]


def _class_index(status: int) -> int:
    """``status_class``'s index in _STATUS_CLASSES."""
    return status // 100 - 1 if 100 <= status <= 599 else 4


class ListenerSeries:
    """One listener's finished requests since the last fold: counts per backend and status
    class, bytes in and out, and (not folded: it is the exported one) its duration
    histogram."""

    __slots__ = ("bytes_in", "bytes_out", "duration", "listener", "requests")

    def __init__(self, listener: str, duration: HistogramValue) -> None:
        self.listener = listener
        self.duration = duration
        # backend -> requests by status class ("1xx".."5xx")
        self.requests: dict[str, list[int]] = {}
        self.bytes_in = 0
        self.bytes_out = 0

    def request_done(
        self, backend: str, status: int, duration_s: float, bytes_in: int, bytes_out: int
    ) -> None:
        counts = self.requests.get(backend)
        if counts is None:
            counts = self.requests[backend] = [0] * len(_STATUS_CLASSES)
        counts[_class_index(status)] += 1
        # ``snapshot.observe`` inlined (it runs interpreted; this runs once per request).
        hist = self.duration
        hist.bucket_counts[bisect_left(_DURATION_BUCKETS, duration_s)] += 1
        hist.sum += duration_s
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def fold_into(self, requests: dict[Labels, int], nbytes: dict[Labels, int]) -> None:
        """Add what was counted since the last fold to the worker's dicts; start again."""
        listener = self.listener
        for backend, counts in self.requests.items():
            for i, n in enumerate(counts):
                if n:
                    labels: Labels = (listener, backend, _STATUS_CLASSES[i])
                    requests[labels] = requests.get(labels, 0) + n
                    counts[i] = 0
        if self.bytes_in:
            key: Labels = (listener, "in")
            nbytes[key] = nbytes.get(key, 0) + self.bytes_in
            self.bytes_in = 0
        if self.bytes_out:
            key = (listener, "out")
            nbytes[key] = nbytes.get(key, 0) + self.bytes_out
            self.bytes_out = 0


class WorkerMetrics:
    """Cumulative counters/gauges/histograms for one worker process.

    The public dicts may be bumped directly where a method call is too much:
    `m.requests[(listener, backend, "2xx")] += 1`.
    """

    __slots__ = (
        "_series",
        "backend_active",
        "bytes",
        "connections",
        "connections_active",
        "exchanges",
        "grpc_requests",
        "request_duration",
        "requests",
        "security_rejections",
        "upstream_errors",
    )

    def __init__(self) -> None:
        self.requests: defaultdict[Labels, int] = defaultdict(int)
        self.exchanges: defaultdict[Labels, int] = defaultdict(int)
        self.grpc_requests: defaultdict[Labels, int] = defaultdict(int)
        self.request_duration: dict[Labels, HistogramValue] = {}
        self.connections: defaultdict[Labels, int] = defaultdict(int)
        self.connections_active: defaultdict[Labels, int] = defaultdict(int)
        self.bytes: defaultdict[Labels, int] = defaultdict(int)
        self.upstream_errors: defaultdict[Labels, int] = defaultdict(int)
        self.backend_active: defaultdict[Labels, int] = defaultdict(int)
        self.security_rejections: defaultdict[Labels, int] = defaultdict(int)
        self._series: dict[str, ListenerSeries] = {}

    def series(self, listener: str) -> ListenerSeries:
        """Where ``listener``'s finished requests are counted (made on first use)."""
        found = self._series.get(listener)
        if found is None:
            key = (listener,)
            hist = self.request_duration.get(key)
            if hist is None:
                hist = self.request_duration[key] = new_histogram(_DURATION_BUCKETS)
            found = self._series[listener] = ListenerSeries(listener, hist)
        return found

    def request_done(
        self,
        listener: str,
        backend: str,
        status: int,
        duration_s: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        """One HTTP request finished with `status` after `duration_s`.

        `bytes_in`/`bytes_out` are the bytes of this exchange on the client side; L4 relays
        that have no requests report through `bytes_transferred` instead.
        """
        self.series(listener).request_done(backend, status, duration_s, bytes_in, bytes_out)

    def bytes_transferred(self, listener: str, bytes_in: int, bytes_out: int) -> None:
        if bytes_in:
            self.bytes[(listener, "in")] += bytes_in
        if bytes_out:
            self.bytes[(listener, "out")] += bytes_out

    def connection_opened(self, listener: str) -> None:
        key = (listener,)
        self.connections[key] += 1
        self.connections_active[key] += 1

    def connection_closed(self, listener: str) -> None:
        self.connections_active[(listener,)] -= 1

    def upstream_error(self, listener: str, backend: str, kind: str) -> None:
        self.upstream_errors[(listener, backend, kind)] += 1

    def security_rejection(self, reason: str) -> None:
        self.security_rejections[(reason,)] += 1

    def backend_active_requests(self, listener: str, backend: str, delta: int) -> None:
        self.backend_active[(listener, backend)] += delta

    def snapshot(self) -> MetricsSnapshot:
        """A copy of every value; safe to encode while the worker keeps counting."""
        for series in self._series.values():
            series.fold_into(self.requests, self.bytes)
        return MetricsSnapshot(
            counters={
                fam.REQUESTS.name: dict(self.requests),
                fam.HTTP_EXCHANGES.name: dict(self.exchanges),
                fam.GRPC_REQUESTS.name: dict(self.grpc_requests),
                fam.CONNECTIONS.name: dict(self.connections),
                fam.BYTES.name: dict(self.bytes),
                fam.UPSTREAM_ERRORS.name: dict(self.upstream_errors),
                fam.SECURITY_REJECTIONS.name: dict(self.security_rejections),
            },
            gauges={
                fam.CONNECTIONS_ACTIVE.name: dict(self.connections_active),
                fam.BACKEND_ACTIVE_REQUESTS.name: dict(self.backend_active),
            },
            histograms={
                fam.REQUEST_DURATION.name: {
                    k: HistogramValue(list(h.bucket_counts), h.sum)
                    for k, h in self.request_duration.items()
                }
            },
        )
