"""The per-listener face of the worker's metrics (gateway/metrics.WorkerMetrics).

Data paths call short methods with the listener name bound once; every value lands
in the one WorkerMetrics the heartbeat snapshots for the supervisor. Plain integers,
no locks, nothing allocated per event beyond the label tuple.
"""

from __future__ import annotations

from gateway.metrics.worker import WorkerMetrics


class ListenerStats:
    __slots__ = ("metrics", "name", "requests_total", "series")

    def __init__(self, name: str, metrics: WorkerMetrics) -> None:
        self.name = name
        self.metrics = metrics
        self.series = metrics.series(name)
        self.requests_total = 0

    def bytes_in(self, n: int) -> None:
        self.metrics.bytes[(self.name, "in")] += n

    def bytes_out(self, n: int) -> None:
        self.metrics.bytes[(self.name, "out")] += n

    def connection_opened(self) -> None:
        self.metrics.connection_opened(self.name)

    def connection_closed(self) -> None:
        self.metrics.connection_closed(self.name)

    def request_done(
        self, backend: str, status: int, duration_s: float, bytes_in: int, bytes_out: int
    ) -> None:
        self.requests_total += 1
        self.series.request_done(backend, status, duration_s, bytes_in, bytes_out)

    def exchange_protocols(self, front: str, back: str) -> None:
        self.metrics.exchanges[(self.name, front, back)] += 1

    def grpc_request(self, grpc_status: str) -> None:
        self.metrics.grpc_requests[(self.name, grpc_status)] += 1

    def no_backend(self) -> None:
        self.metrics.upstream_error(self.name, "", "no_backend")

    def reject(self, reason: str) -> None:
        self.metrics.security_rejection(reason)

    def upstream_error(self, backend_id: str, kind: str) -> None:
        self.metrics.upstream_error(self.name, backend_id, kind)
