"""Bridge from the pure metric values to prometheus_client exposition.

Owns `GatewayCollector`, a custom prometheus_client Collector that, at every scrape, folds
the supervisor's own values into the aggregator and yields one family per definition in
`gateway.metrics.families`. The fold and merge run on the event loop (`freeze`, which owns
the aggregator); `collect` then only turns that frozen view into families, so a render
thread can run it while heartbeats keep updating the aggregator. It must never hand-write
the exposition format (prometheus_client does), never block on I/O, and never invent a
family that is not in the definitions.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from gateway.metrics import FAMILIES, Family, Kind, MetricsAggregator, SupervisorMetrics
from gateway.metrics.snapshot import HistogramValue, Labels, MetricsSnapshot

# The aggregator source id under which the supervisor's own values are folded in.
SUPERVISOR_SOURCE = "supervisor"


class GatewayCollector(Collector):
    def __init__(self, aggregator: MetricsAggregator, supervisor: SupervisorMetrics) -> None:
        self.aggregator = aggregator
        self.supervisor = supervisor
        self._frozen: MetricsSnapshot | None = None

    def freeze(self) -> None:
        """On the event loop: take the merged view the next `collect` renders."""
        self.aggregator.update(SUPERVISOR_SOURCE, self.supervisor.snapshot())
        self._frozen = self.aggregator.merged()

    def collect(self) -> Iterator[Metric]:
        view, self._frozen = self._frozen, None
        if view is None:  # not frozen: a caller on the event loop itself
            self.aggregator.update(SUPERVISOR_SOURCE, self.supervisor.snapshot())
            view = self.aggregator.merged()
        yield from families_from_snapshot(view)


def families_from_snapshot(view: MetricsSnapshot) -> Iterator[Metric]:
    """One prometheus_client family per definition, in definition order."""
    for family in FAMILIES:
        if family.kind is Kind.COUNTER:
            yield _counter(family, view.counters.get(family.name, {}))
        elif family.kind is Kind.GAUGE:
            yield _gauge(family, view.gauges.get(family.name, {}))
        else:
            yield _histogram(family, view.histograms.get(family.name, {}))


def _counter(family: Family, series: dict[Labels, int]) -> Metric:
    m = CounterMetricFamily(family.name, family.help, labels=family.labels)
    for labels, value in sorted(series.items()):
        if len(labels) == len(family.labels):
            m.add_metric(list(labels), value)
    return m


def _gauge(family: Family, series: dict[Labels, int]) -> Metric:
    m = GaugeMetricFamily(family.name, family.help, labels=family.labels)
    for labels, value in sorted(series.items()):
        if len(labels) == len(family.labels):
            m.add_metric(list(labels), value)
    return m


def _histogram(family: Family, series: dict[Labels, HistogramValue]) -> Metric:
    m = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    # floatToGoString is untyped upstream; it gives the canonical `le` spelling.
    bounds = [floatToGoString(b) for b in family.buckets]  # type: ignore[no-untyped-call]
    bounds.append("+Inf")
    for labels, h in sorted(series.items()):
        if len(labels) != len(family.labels) or len(h.bucket_counts) != len(bounds):
            continue  # a malformed series from a source is dropped, never exported wrongly
        m.add_metric(list(labels), list(zip(bounds, h.cumulative(), strict=True)), h.sum)
    return m


def build_registry(
    aggregator: MetricsAggregator, supervisor: SupervisorMetrics
) -> CollectorRegistry:
    """A registry holding only the gateway's families (no default process collectors:
    the soak runner samples processes with psutil, per worker)."""
    return build_exporter(aggregator, supervisor)[0]


def build_exporter(
    aggregator: MetricsAggregator, supervisor: SupervisorMetrics
) -> tuple[CollectorRegistry, GatewayCollector]:
    """The registry and its collector (whose `freeze` precedes a render in a thread)."""
    collector = GatewayCollector(aggregator, supervisor)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry, collector
