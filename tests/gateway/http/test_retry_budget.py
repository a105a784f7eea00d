"""The retry budget's admission rule, without sockets."""

from __future__ import annotations

from gateway.http.retry_budget import RetryBudget, RetryBudgetLimits


def test_floor_admits_retries_at_low_load() -> None:
    budget = RetryBudget(RetryBudgetLimits(percent=20, min_concurrency=3))
    budget.request_started()
    assert budget.admit(holding=False)
    assert budget.admit(holding=True)  # the same request's next retry keeps its slot
    budget.request_finished(holding=True)
    assert (budget.active_requests, budget.active_retries, budget.denied) == (0, 0, 0)


def test_retries_in_flight_stay_under_the_share_of_requests() -> None:
    budget = RetryBudget(RetryBudgetLimits(percent=20, min_concurrency=3))
    for _ in range(100):
        budget.request_started()
    admitted = sum(budget.admit(holding=False) for _ in range(100))
    assert admitted == 20 and budget.denied == 80  # 20 % of 100 in flight
    budget.request_finished(holding=True)  # a retrying request ends: its slot is free...
    assert budget.active_retries == 19
    assert not budget.admit(holding=False)  # ...but 99 in flight allow 19 retries
    for _ in range(6):
        budget.request_started()  # 105 in flight allow 21
    assert budget.admit(holding=False) and budget.admit(holding=False)
    assert not budget.admit(holding=False)
    assert budget.active_retries == budget.limit() == 21


def test_zero_budget_refuses_every_retry() -> None:
    budget = RetryBudget(RetryBudgetLimits(percent=0, min_concurrency=0))
    budget.request_started()
    assert not budget.admit(holding=False)
    assert budget.denied == 1
