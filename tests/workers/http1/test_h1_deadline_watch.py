"""The deadlines of a listener's HTTP/1.1 connections are kept by one task (issue 18: an idle
keep-alive connection costs its handler task and nothing else), still fire, and the
bookkeeping of closed connections does not pile up."""

from __future__ import annotations

import trio
from h1_peers import H11Client, start_backend, start_proxy

from gateway.http.limits import HttpLimits


def _task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(c) for n in task.child_nurseries for c in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


async def test_idle_keepalive_connections_share_one_deadline_task(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(header_timeout_ms=1500))
    first = await H11Client.open(proxy.port)
    response, _, _ = await first.request(b"GET", b"/")  # the upstream is pooled from here on
    assert response.status_code == 200
    before = _task_count()
    clients = []
    for i in range(20):
        client = await H11Client.open(proxy.port)
        response, body, _ = await client.request(b"GET", f"/{i}".encode())
        assert response.status_code == 200 and body == b"echo:"
        clients.append(client)
    await trio.sleep(0.05)
    # One handler task per idle connection (a watcher task and nursery each would double it).
    assert _task_count() - before < 25
    # ... and the shared watch still closes each at its own idle deadline, without a word.
    with trio.fail_after(5):
        for client in [first, *clients]:
            assert await client.stream.receive_some(100) == b""
    assert len(proxy.records) == 21
    watch = proxy.ctx.watch
    assert watch is not None and not [e for e in watch.heap if e[1] == e[2].seq]


async def test_entries_of_closed_connections_are_pruned(nursery: trio.Nursery) -> None:
    # A long header timeout: without pruning, every closed connection's entry would stay in
    # the heap for 30 s.
    proxy = await start_proxy(nursery, [], HttpLimits(header_timeout_ms=30_000))
    for _ in range(600):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.aclose()
    with trio.fail_after(10):
        while proxy.ctx.watch is None or proxy.ctx.watch.next_seq <= 600:
            await trio.sleep(0.01)  # every connection scheduled its idle deadline
    assert len(proxy.ctx.watch.heap) < 300
