"""Retry budget (Envoy's ``retry_budget``): retries in flight may be at most a share of the
requests in flight, so a failing backend cannot multiply the load on the others.

Owns the admission rule: a retry is admitted while the retries in flight stay under
``max(min_concurrency, percent% of the requests in flight)``; a request that retries holds
one retry slot from its first admitted retry until it finishes (its later retries re-check
with that slot counted). The floor keeps retries working at low load (one client, a few
requests). Per listener and per worker, as every balancer state is. Must never decide
*whether* a retry is safe (idempotency, nothing sent: the proxy core's rule), do I/O or
read a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryBudgetLimits:
    percent: int = 20  # Envoy's default budget_percent
    min_concurrency: int = 3  # Envoy's default min_retry_concurrency


class RetryBudget:
    """Counts requests and retries in flight; ``admit`` is the only decision."""

    __slots__ = ("active_requests", "active_retries", "denied", "min_concurrency", "percent")

    def __init__(self, limits: RetryBudgetLimits) -> None:
        self.percent = limits.percent
        self.min_concurrency = limits.min_concurrency
        self.active_requests = 0
        self.active_retries = 0
        self.denied = 0  # retries refused since start (a counter for metrics)

    def request_started(self) -> None:
        self.active_requests += 1

    def request_finished(self, holding: bool) -> None:
        """A request ended; ``holding``: it had an admitted retry (its slot is freed)."""
        self.active_requests -= 1
        if holding:
            self.active_retries -= 1

    def limit(self) -> int:
        """How many retries may be in flight now."""
        return max(self.min_concurrency, self.active_requests * self.percent // 100)

    def admit(self, holding: bool) -> bool:
        """May this request retry now? ``holding``: it already holds a retry slot (an earlier
        retry of the same request). Admitting a first retry takes a slot."""
        if holding:
            if self.active_retries <= self.limit():
                return True
        elif self.active_retries < self.limit():
            self.active_retries += 1
            return True
        self.denied += 1
        return False
