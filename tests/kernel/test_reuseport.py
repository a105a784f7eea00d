"""reuseport_select on loopback: the program picks the socket of the sending CPU's worker
(TCP, new QUIC connections) or the worker named in the QUIC DCID; empty slots fall back
to the kernel hash. The client is pinned with os.sched_setaffinity (loopback receive runs
on the sending CPU)."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import kpackets as kp
import pytest

from gateway import steering
from kernel.datapath import Datapath
from kernel.socket_steering import listener_key, set_incoming_cpu

pytestmark = pytest.mark.root


@pytest.fixture
def restore_affinity() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, before)


def group(kind: int, family: int, n: int, attach: Datapath | None) -> list[socket.socket]:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    socks: list[socket.socket] = []
    port = 0
    for _ in range(n):
        s = socket.socket(family, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if attach is not None and not socks:
            attach.attach_reuseport(s)
        s.bind((host, port))
        port = s.getsockname()[1]
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        s.setblocking(False)
        socks.append(s)
    return socks


def who_accepts(listeners: list[socket.socket], cpu: int) -> int:
    os.sched_setaffinity(0, {cpu})
    addr = listeners[0].getsockname()
    with socket.socket(listeners[0].family, socket.SOCK_STREAM) as c:
        c.connect(addr[:2])
        ready, _, _ = select.select(listeners, [], [], 2)
        assert len(ready) == 1, ready
        conn, _ = ready[0].accept()
        conn.close()
        return listeners.index(ready[0])


def who_receives(socks: list[socket.socket], cpu: int, payload: bytes) -> int:
    os.sched_setaffinity(0, {cpu})
    with socket.socket(socks[0].family, socket.SOCK_DGRAM) as c:
        c.sendto(payload, socks[0].getsockname()[:2])
        ready, _, _ = select.select(socks, [], [], 2)
        assert len(ready) == 1, ready
        ready[0].recvfrom(2048)
        return socks.index(ready[0])


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_tcp_goes_to_the_receiving_cpus_worker(
    datapath: Datapath, restore_affinity: None, family: int
) -> None:
    socks = group(socket.SOCK_STREAM, family, 2, datapath)
    try:
        lk = listener_key(socks[0])
        datapath.set_workers({0: {lk: socks[0].fileno()}, 1: {lk: socks[1].fileno()}})
        picks = [who_accepts(socks, cpu) for cpu in (0, 1) * 10]
        assert picks == [0, 1] * 10
        assert sum(datapath.reuseport_stats()["selected_cpu"]) == 20
        # a closed worker socket leaves the sockarray by itself: CPU 0 falls back to the hash
        socks[0].close()
        assert [who_accepts(socks[1:], 0) for _ in range(3)] == [0, 0, 0]
        assert sum(datapath.reuseport_stats()["fallback_empty_slot"]) == 3
    finally:
        for s in socks:
            s.close()


def test_quic_worker_key_in_dcid(datapath: Datapath, restore_affinity: None) -> None:
    socks = group(socket.SOCK_DGRAM, socket.AF_INET, 2, datapath)
    try:
        lk = listener_key(socks[0])
        datapath.set_workers(
            {0: {lk: socks[0].fileno()}, 1: {lk: socks[1].fileno()}},
            quic_short_dcid_len={lk: 8},
        )
        for cpu in (0, 1):
            for key in (0, 1):
                cid = steering.encode_cid(key, b"\x11" * 5)
                assert who_receives(socks, cpu, kp.quic_short(cid)) == key
                assert who_receives(socks, cpu, kp.quic_long(cid, first=0xE0)) == key
            # a client-chosen Initial DCID names no worker: the receiving CPU's worker
            assert who_receives(socks, cpu, kp.quic_long(b"\x01" * 8)) == cpu
            # a key with an empty slot falls back to the receiving CPU's worker as well
            assert (
                who_receives(socks, cpu, kp.quic_short(steering.encode_cid(77, b"\x00" * 5))) == cpu
            )
        rp = datapath.reuseport_stats()
        assert sum(rp["selected_cid"]) == 8
        assert sum(rp["selected_cpu"]) == 4
    finally:
        for s in socks:
            s.close()


def test_quic_reload_keeps_old_connections_on_old_worker(
    datapath: Datapath, restore_affinity: None
) -> None:
    """Generation 1 takes new connections; DCIDs naming generation 0's workers still reach them."""
    socks = group(socket.SOCK_DGRAM, socket.AF_INET, 4, datapath)
    try:
        lk = listener_key(socks[0])
        old = {0: {lk: socks[0].fileno()}, 1: {lk: socks[1].fileno()}}
        datapath.set_workers(old, quic_short_dcid_len={lk: 8})
        new = {0: {lk: socks[2].fileno()}, 1: {lk: socks[3].fileno()}}
        datapath.set_workers(new, quic_short_dcid_len={lk: 8}, generation=1, draining=old)
        for cpu in (0, 1):
            assert who_receives(socks, cpu, kp.quic_long(b"\x02" * 8)) == 2 + cpu
            for gen, first in ((0, 0), (1, 2)):
                for c in (0, 1):
                    cid = steering.encode_cid(steering.worker_key(c, gen), b"\x33" * 5)
                    assert who_receives(socks, cpu, kp.quic_short(cid)) == first + c
        # the old generation is gone: its sockets leave the plan and the map
        datapath.set_workers(new, quic_short_dcid_len={lk: 8}, generation=1)
        cid = steering.encode_cid(steering.worker_key(1, 0), b"\x33" * 5)
        assert who_receives(socks, 0, kp.quic_short(cid)) == 2
    finally:
        for s in socks:
            s.close()


def test_incoming_cpu_hint_without_bpf(restore_affinity: None) -> None:
    """The no-BPF fallback: SO_INCOMING_CPU on each worker's socket (kernel >= 6.2)."""
    socks = group(socket.SOCK_STREAM, socket.AF_INET, 2, None)
    try:
        for cpu, s in enumerate(socks):
            set_incoming_cpu(s, cpu)
        assert [who_accepts(socks, cpu) for cpu in (0, 1) * 5] == [0, 1] * 5
    finally:
        for s in socks:
            s.close()
