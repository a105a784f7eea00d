"""The connection-ID route table (local LRU + shared store, idle expiry, caps), QUIC-LB
decoding and the routing decision, without sockets: a dict plays the shared BPF map."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.passthrough import cid_record, flow_record
from gateway.passthrough.cid_routes import CidRoutes
from gateway.passthrough.public_header import PacketKind, PublicHeader
from gateway.passthrough.quic_lb import QuicLbDecoder
from gateway.passthrough.routing import (
    BACKEND_GONE,
    NOT_QUIC,
    SERVER_ONLY,
    SHORT_DCID,
    SMALL_INITIAL,
    UNKNOWN_CID,
    Via,
    route_client_packet,
    server_route,
)


class DictStore:
    """What the BPF LRU map does for CidRoutes, minus the LRU."""

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[int, float]] = {}
        self.puts = 0

    def get(self, cid: bytes) -> tuple[int, float] | None:
        return self.entries.get(cid)

    def put(self, cid: bytes, backend: int, now: float, *, must_exist: bool = False) -> bool:
        self.puts += 1
        if must_exist and cid not in self.entries:
            return False
        self.entries[cid] = (backend, now)
        return True


def routes(store: DictStore | None = None, **kw: float) -> CidRoutes:
    return CidRoutes(
        max_entries=int(kw.get("max_entries", 100)),
        idle_timeout_s=kw.get("idle_s", 60.0),
        shared=store,
        refresh_s=kw.get("refresh_s"),
    )


def test_a_route_learned_by_one_worker_is_found_by_another() -> None:
    store = DictStore()
    a, b = routes(store), routes(store)
    a.learn(b"server-cid-1", 7, now=10.0)
    assert b.lookup(b"server-cid-1", now=11.0) == 7
    assert b.adopted_total == 1
    assert routes().lookup(b"server-cid-1", now=11.0) is None  # no store, no sharing


def test_idle_routes_expire_here_and_are_ignored_in_the_store() -> None:
    store = DictStore()
    a = routes(store, idle_s=5.0)
    a.learn(b"cid", 1, now=0.0)
    assert routes(store, idle_s=5.0).lookup(b"cid", now=4.9) == 1
    assert routes(store, idle_s=5.0).lookup(b"cid", now=5.0) is None
    assert a.expire(now=5.0) == 1 and len(a) == 0


def test_use_keeps_a_route_fresh_in_the_store_with_throttled_writes() -> None:
    store = DictStore()
    a = routes(store, idle_s=5.0, refresh_s=1.0)
    a.learn(b"cid", 1, now=0.0)
    puts = store.puts
    for i in range(1, 100):  # a packet every 0.1 s for 10 s: two idle timeouts
        assert a.lookup(b"cid", now=i / 10) == 1
    assert store.puts - puts <= 11  # about one write a second, not one per packet
    assert routes(store, idle_s=5.0).lookup(b"cid", now=10.0) == 1


def test_a_route_the_store_lost_is_written_back_and_counted() -> None:
    store = DictStore()
    a = routes(store, refresh_s=1.0)
    a.learn(b"cid", 3, now=0.0)
    store.entries.clear()  # the kernel's LRU evicted it
    assert a.lookup(b"cid", now=2.0) == 3
    assert a.shared_lost_total == 1 and store.entries[b"cid"][0] == 3


def test_the_local_table_is_capped_and_counts_evictions() -> None:
    a = routes(max_entries=3)
    for i in range(10):
        a.learn(bytes([i]) * 8, i, now=float(i))
    assert len(a) == 3 and a.evictions_total == 7
    assert a.lookup(bytes([9]) * 8, now=10.0) == 9
    assert a.lookup(bytes([0]) * 8, now=10.0) is None


def test_record_layouts() -> None:
    assert len(cid_record.encode_key(b"\x01" * 20)) == cid_record.KEY_BYTES
    assert cid_record.encode_key(b"ab") != cid_record.encode_key(b"ab\0")  # length counts
    with pytest.raises(ValueError):
        cid_record.encode_key(b"")
    v = cid_record.encode_value(cid_record.backend_key("10.0.0.1:443"), 1234)
    assert cid_record.decode_value(v) == (cid_record.backend_key("10.0.0.1:443"), 1234)
    assert cid_record.backend_key("10.0.0.1:443") != cid_record.backend_key("10.0.0.2:443")
    k4 = flow_record.encode_key("10.0.0.1", 5000, 9)
    k6 = flow_record.encode_key("2001:db8::1", 5000, 9)
    assert len(k4) == len(k6) == flow_record.KEY_BYTES and k4 != k6
    assert flow_record.decode_value(flow_record.encode_value(40000, 77)) == (40000, 77)


# ---- QUIC-LB ------------------------------------------------------------------------


@given(
    st.integers(0, 6),
    st.integers(1, 6),
    st.integers(1, 4),
    st.binary(min_size=12, max_size=12),
    st.binary(min_size=6, max_size=6),
)
def test_quic_lb_decodes_what_a_server_mints(
    config_id: int, sid_len: int, offset: int, nonce: bytes, sid_pool: bytes
) -> None:
    sid = sid_pool[:sid_len]
    lb = QuicLbDecoder(
        config_id=config_id, server_id_len=sid_len, server_id_offset=offset, servers={sid: 4}
    )
    cid = lb.mint(sid, nonce)
    assert lb.decode(cid) == 4
    other = bytes([((config_id + 1) % 7) << 5 | (cid[0] & 0x1F)]) + cid[1:]
    assert lb.decode(other) is None  # another config rotation codepoint
    assert lb.decode(cid[: offset + sid_len - 1]) is None  # too short to hold the ID


def test_quic_lb_rejects_bad_configs_and_unknown_ids() -> None:
    with pytest.raises(ValueError):
        QuicLbDecoder(config_id=7, server_id_len=2, server_id_offset=1, servers={})
    with pytest.raises(ValueError):
        QuicLbDecoder(config_id=0, server_id_len=2, server_id_offset=1, servers={b"\1": 0})
    lb = QuicLbDecoder(config_id=0, server_id_len=2, server_id_offset=1, servers={b"\0\1": 0})
    assert lb.decode(bytes([0x1F, 0, 2, 9, 9, 9, 9, 9])) is None


# ---- the routing decision ------------------------------------------------------------

BIG, SMALL = 1200, 1199


def decide(h: PublicHeader | None, size: int = BIG, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "routes": routes(),
        "quic_lb": None,
        "index_of": {101: 0, 102: 1},
        "address_backend": None,
        "min_dcid_len": 8,
        "now": 0.0,
    }
    args.update(kw)
    return route_client_packet(h, size, **args)  # type: ignore[arg-type]


def hdr(kind: PacketKind, dcid: bytes = b"D" * 8, scid: bytes = b"S" * 8) -> PublicHeader:
    return PublicHeader(kind, -1 if kind is PacketKind.SHORT else 1, dcid, scid)


def test_new_connections_need_a_padded_initial_and_a_long_enough_dcid() -> None:
    r = decide(hdr(PacketKind.INITIAL))
    assert r.via is Via.NEW and r.record
    assert decide(hdr(PacketKind.INITIAL), SMALL).reason == SMALL_INITIAL
    assert decide(hdr(PacketKind.INITIAL, b"D" * 7)).reason == SHORT_DCID
    unknown = decide(hdr(PacketKind.UNKNOWN_VERSION))
    assert unknown.via is Via.NEW and not unknown.record  # answered by Version Negotiation


def test_packets_only_servers_send_and_non_quic_are_dropped() -> None:
    assert decide(None).reason == NOT_QUIC
    assert decide(hdr(PacketKind.RETRY)).reason == SERVER_ONLY
    assert decide(hdr(PacketKind.VERSION_NEGOTIATION)).reason == SERVER_ONLY


def test_known_connection_ids_win_over_everything_but_quic_lb() -> None:
    t = routes()
    t.learn(b"K" * 8, 102, now=0.0)
    for kind in (PacketKind.INITIAL, PacketKind.HANDSHAKE, PacketKind.SHORT, PacketKind.ZERO_RTT):
        r = decide(hdr(kind, b"K" * 8), SMALL, routes=t, address_backend=0)
        assert (r.via, r.backend) == (Via.TABLE, 1)
    # b"K" = 0b010_01011: config id 2 in the first octet's high bits
    lb = QuicLbDecoder(config_id=2, server_id_len=2, server_id_offset=1, servers={b"KK": 0})
    r = decide(hdr(PacketKind.SHORT, b"K" * 8), routes=t, quic_lb=lb)
    assert (r.via, r.backend) == (Via.QUIC_LB, 0)


def test_a_backend_that_left_the_config_is_not_replaced() -> None:
    t = routes()
    t.learn(b"K" * 8, 999, now=0.0)
    assert decide(hdr(PacketKind.SHORT, b"K" * 8), routes=t, address_backend=0).reason == (
        BACKEND_GONE
    )


def test_unknown_short_headers_follow_the_address_or_are_dropped() -> None:
    r = decide(hdr(PacketKind.SHORT, b"N" * 8), address_backend=1)
    assert (r.via, r.backend, r.record) == (Via.ADDRESS, 1, True)
    assert decide(hdr(PacketKind.SHORT, b"N" * 8)).reason == UNKNOWN_CID
    assert decide(hdr(PacketKind.HANDSHAKE, b"N" * 8)).reason == UNKNOWN_CID


def test_server_packets_teach_their_scid_unless_quic_lb_routes_it() -> None:
    for kind in (PacketKind.INITIAL, PacketKind.HANDSHAKE, PacketKind.RETRY):
        assert server_route(hdr(kind, scid=b"R" * 8), 0, None) == b"R" * 8
    assert server_route(hdr(PacketKind.SHORT), 0, None) is None
    assert server_route(hdr(PacketKind.VERSION_NEGOTIATION), 0, None) is None
    lb = QuicLbDecoder(config_id=2, server_id_len=2, server_id_offset=1, servers={b"RR": 0})
    assert server_route(hdr(PacketKind.INITIAL, scid=b"R" * 8), 0, lb) is None
    assert server_route(hdr(PacketKind.INITIAL, scid=b"R" * 8), 1, lb) == b"R" * 8
