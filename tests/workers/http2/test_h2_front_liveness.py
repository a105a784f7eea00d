"""The HTTP/2 front closes what is dead or idle: an unanswered keep-alive PING, a connection
with no stream past the idle timeout (GOAWAY first)."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import trio
from h2_peers import start_h2_proxy

from gateway.http.limits import H2Limits


async def _frames_until_eof(stream: trio.SocketStream, answer_pings: bool) -> list[object]:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    await stream.send_all(conn.data_to_send())
    events: list[object] = []
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return events
        events += conn.receive_data(data)
        if answer_pings:
            out = conn.data_to_send()  # h2 queues the PING ACK itself
            if out:
                await stream.send_all(out)


async def test_unanswered_ping_closes_the_connection(nursery: trio.Nursery) -> None:
    limits = H2Limits(keepalive_interval_s=0.2, keepalive_timeout_s=0.4, idle_timeout_s=60)
    proxy = await start_h2_proxy(nursery, [], h2_limits=limits)
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    started = trio.current_time()
    with trio.fail_after(5):
        events = await _frames_until_eof(stream, answer_pings=False)
    assert any(isinstance(e, h2.events.PingReceived) for e in events)
    assert 0.6 <= trio.current_time() - started < 3


async def test_idle_connection_gets_goaway_then_close(nursery: trio.Nursery) -> None:
    limits = H2Limits(keepalive_interval_s=0.2, keepalive_timeout_s=5, idle_timeout_s=1.0)
    proxy = await start_h2_proxy(nursery, [], h2_limits=limits)
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    started = trio.current_time()
    with trio.fail_after(5):
        events = await _frames_until_eof(stream, answer_pings=True)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == 0
    # Answered PINGs keep a connection alive, not busy: idle still ends it.
    assert any(isinstance(e, h2.events.PingReceived) for e in events)
    assert 1.0 <= trio.current_time() - started < 3
