"""ExpressGateway configs for the HTTP/1.1 real-peer tests: one h1 listener per backend."""

from __future__ import annotations


def h1_gateway_config(
    pairs: list[tuple[int, int]],
    *,
    workers: int = 1,
    http: str = "",
    runtime: str = "",
) -> str:
    """A listener `h1-<i>` on 127.0.0.1:<listen port> proxying to 127.0.0.1:<backend port>."""
    listeners = []
    for i, (listen_port, backend_port) in enumerate(pairs):
        listeners.append(
            f"""
[[listeners]]
name = "h1-{i}"
address = "127.0.0.1:{listen_port}"
protocol = "h1"
[listeners.http]
{http}
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
        )
    return f"""
[runtime]
workers = {workers}
drain_timeout_ms = 3000
{runtime}

[observability]
log_format = "json"
access_log = false
{"".join(listeners)}
"""
