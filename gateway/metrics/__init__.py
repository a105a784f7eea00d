"""Metric definitions, the worker recorder, the supervisor's values and the aggregator.

Pure: no prometheus_client, no I/O, no clock. The supervisor's exporter
(`supervisor/metrics_export.py`) turns a merged `MetricsSnapshot` into Prometheus families.
"""

from gateway.metrics.aggregator import DEFAULT_MAX_SERIES_PER_FAMILY, MetricsAggregator
from gateway.metrics.families import FAMILIES, FAMILIES_BY_NAME, Family, Kind, family_names
from gateway.metrics.snapshot import (
    HistogramValue,
    MetricsSnapshot,
    decode_snapshot,
    encode_snapshot,
)
from gateway.metrics.supervisor_metrics import SupervisorMetrics
from gateway.metrics.worker import WorkerMetrics, status_class

__all__ = [
    "DEFAULT_MAX_SERIES_PER_FAMILY",
    "FAMILIES",
    "FAMILIES_BY_NAME",
    "Family",
    "HistogramValue",
    "Kind",
    "MetricsAggregator",
    "MetricsSnapshot",
    "SupervisorMetrics",
    "WorkerMetrics",
    "decode_snapshot",
    "encode_snapshot",
    "family_names",
    "status_class",
]
