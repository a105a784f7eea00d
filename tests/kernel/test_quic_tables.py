"""The shared tables of quic_passthrough listeners (kernel/cid_map.py + workers/bpf_map.py):
a worker without any capability uses the fd it inherited; a resize keeps the routes; the
LRU map stays within its size."""

from __future__ import annotations

import os

import pytest

from gateway.passthrough import cid_record
from kernel.cid_map import copy_entries, create_table
from workers.bpf_map import BPF_EXIST, BpfHashMap

pytestmark = [pytest.mark.root]


def routes_map(fd: int) -> BpfHashMap:
    return BpfHashMap(fd, cid_record.KEY_BYTES, cid_record.VALUE_BYTES)


def test_a_process_without_capabilities_reads_and_writes_an_inherited_table() -> None:
    fd = create_table("routes", 1000)
    try:
        pid = os.fork()
        if pid == 0:  # the child drops every privilege, as workers will
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                m = routes_map(fd)
                key = cid_record.encode_key(b"abcdefgh")
                ok = m.update(key, cid_record.encode_value(7, 1)) and m.lookup(key) is not None
                code = 0 if ok and m.errors_total == 0 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        found = routes_map(fd).lookup(cid_record.encode_key(b"abcdefgh"))
        assert found is not None and cid_record.decode_value(found)[0] == 7
    finally:
        os.close(fd)


def test_resize_copies_routes_and_the_lru_bounds_the_table() -> None:
    small, big = create_table("routes", 64), create_table("routes", 4096)
    try:
        m = routes_map(small)
        keys = [cid_record.encode_key(i.to_bytes(8, "big")) for i in range(1000)]
        for i, k in enumerate(keys):
            assert m.update(k, cid_record.encode_value(i + 1, i))
        present = [k for k in keys if m.lookup(k) is not None]
        assert 0 < len(present) <= 64  # the kernel's LRU evicted the rest
        assert not m.update(keys[0], cid_record.encode_value(1, 0), BPF_EXIST)  # evicted
        assert copy_entries("routes", small, big, 4096) == len(present)
        b = routes_map(big)
        assert all(b.lookup(k) == m.lookup(k) for k in present)
    finally:
        os.close(small)
        os.close(big)


def _plan(max_routes: int | None) -> object:
    from gateway.config.plan import compile_config

    block = f"[listeners.quic_passthrough]\nmax_routes = {max_routes}\n" if max_routes else ""
    text = (
        '[[listeners]]\nname = "h3"\naddress = "127.0.0.1:4433"\nprotocol = "quic_passthrough"\n'
        f'[listeners.balancer]\npolicy = "maglev"\n{block}'
        '[[listeners.backends]]\naddress = "127.0.0.1:5000"\n'
    )
    if max_routes is None:
        text = text.replace("quic_passthrough", "udp").replace('policy = "maglev"', "")
    return compile_config(text.encode(), online_cpus=[0])


def test_supervisor_tables_survive_a_reload_resize_and_go_with_their_listener() -> None:
    from supervisor.cid_tables import CidTables

    tables = CidTables()
    try:
        tables.ensure(_plan(100))  # type: ignore[arg-type]
        first = tables.fds()["h3"]
        key = cid_record.encode_key(b"routeme!")
        assert routes_map(first[0]).update(key, cid_record.encode_value(5, 1))
        tables.ensure(_plan(100))  # type: ignore[arg-type]
        assert tables.fds()["h3"] == first  # same size: the very same maps
        tables.ensure(_plan(5000))  # type: ignore[arg-type]
        resized = tables.fds()["h3"]
        assert resized != first
        assert routes_map(resized[0]).lookup(key) is not None  # the route came along
        tables.release_unused(_plan(None))  # type: ignore[arg-type]
        assert tables.fds() == {}
    finally:
        tables.close_all()
