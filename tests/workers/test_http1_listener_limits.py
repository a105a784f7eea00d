"""The H1 listener's limits come from the compiled plan: the issue 17 keys reach the proxy."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.config.plan import compile_config
from workers.http1_listener import limits_from_plan

CONFIG = b"""
[[listeners]]
name = "web"
address = "127.0.0.1:8080"
protocol = "h1"

[listeners.http]
pool_max_tunnels_per_backend = 7
retry_budget_percent = 35
retry_budget_min_concurrency = 1
forwarded_headers = "trusted"
trusted_proxies = ["10.0.0.0/8"]

[[listeners.backends]]
address = "127.0.0.1:9001"
"""


def test_issue_17_keys_reach_the_h1_limits() -> None:
    plan = compile_config(CONFIG, online_cpus=[0])
    runtime = SimpleNamespace(plan=plan.listeners[0], config=plan.config)
    limits = limits_from_plan(runtime)  # type: ignore[arg-type]
    assert limits.pool.max_tunnels_per_backend == 7
    assert (limits.retry_budget.percent, limits.retry_budget.min_concurrency) == (35, 1)
    assert limits.forwarding.mode == "trusted"
    assert limits.forwarding.keeps_inbound("10.2.3.4")
    assert not limits.forwarding.keeps_inbound("192.0.2.1")
