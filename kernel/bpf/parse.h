/* Packet parsing for xdp_steer: Ethernet, one VLAN tag, IPv4/IPv6, TCP/UDP, QUIC DCID. */
#ifndef GW_PARSE_H
#define GW_PARSE_H
#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "hash.h"

#define GW_ETH_P_8021Q 0x8100
#define GW_ETH_P_8021AD 0x88A8
#define GW_IPV6_FRAGMENT 44

enum gw_parse_status { GW_OK = 0, GW_NOT_IP, GW_TRUNCATED, GW_OTHER_PROTO };

struct gw_flow {
	__u8 saddr[16];  /* v4 in the first 4 bytes */
	__u32 family;    /* 4 or 6 */
	__u32 hash;      /* flow hash (addresses, ports, proto) */
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 fragment;
	__u8 new_flow;   /* TCP SYN without ACK */
	__u8 pad;
	void *l4_payload; /* start of UDP payload (UDP only) */
};

struct gw_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline int gw_parse_ports(void *l4, void *data_end, struct gw_flow *f)
{
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return GW_TRUNCATED;
		f->sport = bpf_ntohs(tcp->source);
		f->dport = bpf_ntohs(tcp->dest);
		f->new_flow = tcp->syn && !tcp->ack;
		return GW_OK;
	}
	if (f->proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return GW_TRUNCATED;
		f->sport = bpf_ntohs(udp->source);
		f->dport = bpf_ntohs(udp->dest);
		f->l4_payload = (void *)(udp + 1);
		return GW_OK;
	}
	return GW_OTHER_PROTO;
}

static __always_inline int gw_parse_v4(void *l3, void *data_end, __u32 seed, struct gw_flow *f)
{
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return GW_TRUNCATED;
	__u32 ihl_bytes = ip->ihl * 4;
	if (ihl_bytes < sizeof(*ip))
		return GW_TRUNCATED;
	if (l3 + ihl_bytes > data_end)
		return GW_TRUNCATED;
	f->family = 4;
	f->proto = ip->protocol;
	__builtin_memcpy(f->saddr, &ip->saddr, 4);
	__u32 h = gw_mix(seed, bpf_ntohl(ip->saddr));
	h = gw_mix(h, bpf_ntohl(ip->daddr));
	/* every fragment (MF set or offset != 0) hashes on addresses only, so all of a
	 * datagram's pieces land on one CPU */
	if (ip->frag_off & bpf_htons(0x3fff)) {
		f->fragment = 1;
		f->hash = gw_hash_tail(h, 0, 0, f->proto);
		return GW_OK;
	}
	int st = gw_parse_ports(l3 + ihl_bytes, data_end, f);
	if (st != GW_OK)
		return st;
	f->hash = gw_hash_tail(h, f->sport, f->dport, f->proto);
	return GW_OK;
}

static __always_inline int gw_parse_v6(void *l3, void *data_end, __u32 seed, struct gw_flow *f)
{
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > data_end)
		return GW_TRUNCATED;
	f->family = 6;
	f->proto = ip6->nexthdr;
	__builtin_memcpy(f->saddr, &ip6->saddr, 16);
	__u32 h = seed;
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = gw_mix(h, bpf_ntohl(ip6->saddr.in6_u.u6_addr32[i]));
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = gw_mix(h, bpf_ntohl(ip6->daddr.in6_u.u6_addr32[i]));
	if (f->proto == GW_IPV6_FRAGMENT) {
		f->fragment = 1;
		f->hash = gw_hash_tail(h, 0, 0, f->proto);
		return GW_OK;
	}
	int st = gw_parse_ports((void *)(ip6 + 1), data_end, f);
	if (st != GW_OK)
		return st;
	f->hash = gw_hash_tail(h, f->sport, f->dport, f->proto);
	return GW_OK;
}

static __always_inline int gw_parse(void *data, void *data_end, __u32 seed, struct gw_flow *f)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return GW_TRUNCATED;
	__u16 proto = bpf_ntohs(eth->h_proto);
	void *l3 = (void *)(eth + 1);
	if (proto == GW_ETH_P_8021Q || proto == GW_ETH_P_8021AD) {
		struct gw_vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return GW_TRUNCATED;
		proto = bpf_ntohs(vlan->proto);
		l3 = (void *)(vlan + 1);
	}
	if (proto == ETH_P_IP)
		return gw_parse_v4(l3, data_end, seed, f);
	if (proto == ETH_P_IPV6)
		return gw_parse_v6(l3, data_end, seed, f);
	return GW_NOT_IP;
}

/* Hash the QUIC destination connection ID at `payload`. Returns 0 and sets *out on success,
 * 1 when the DCID is empty (caller keeps the flow hash), -1 when malformed/truncated.
 * The DCID is copied with bpf_xdp_load_bytes: a per-byte loop over packet memory makes
 * clang emit arithmetic on data_end, which the verifier rejects. */
static __always_inline int gw_quic_dcid_hash(struct xdp_md *ctx, __u8 *payload, void *data,
					     void *data_end, __u32 short_len, __u32 seed,
					     __u32 *out)
{
	if ((void *)(payload + 1) > data_end)
		return -1;
	__u32 off;
	__u64 len; /* 64-bit: a zero-extended 32-bit copy would lose the bounds checked below */
	if (payload[0] & 0x80) {
		if ((void *)(payload + 6) > data_end)
			return -1;
		len = payload[5];
		off = (__u32)((void *)payload - data) + 6;
	} else {
		len = short_len;
		off = (__u32)((void *)payload - data) + 1;
	}
	if (len > GW_CID_MAX_BYTES)
		return -1;
	if (len == 0)
		return 1;
	/* keep clang from re-reading an unchecked copy of len for the helper call */
	asm volatile("" : "+r"(len));
	if (len < 1 || len > GW_CID_MAX_BYTES)
		return -1;
	__u8 cid[GW_CID_MAX_BYTES] = {};
	if (bpf_xdp_load_bytes(ctx, off, cid, len))
		return -1;
	__u32 h = GW_FNV_BASIS ^ seed;
	for (int i = 0; i < GW_CID_MAX_BYTES; i++) {
		if (i >= len)
			break;
		h = (h ^ cid[i]) * GW_FNV_PRIME;
	}
	*out = gw_fmix32(h);
	return 0;
}

/* The CPU a connection ID we minted names (GW_CID_MARKER, key_hi, key_lo, ...: the key is
 * gateway.steering.worker_key(cpu, parity) = parity * GW_MAX_CPUS + cpu), read from the
 * DCID at `payload`. Returns 0 and sets *cpu, or -1 (no marker, too short, malformed). */
static __always_inline int gw_quic_owner_cpu(struct xdp_md *ctx, __u8 *payload, void *data,
					     void *data_end, __u32 short_len, __u32 *cpu)
{
	if ((void *)(payload + 6) > data_end)
		return -1;
	__u32 off;
	__u32 len;
	if (payload[0] & 0x80) {
		len = payload[5];
		off = (__u32)((void *)payload - data) + 6;
	} else {
		len = short_len;
		off = (__u32)((void *)payload - data) + 1;
	}
	if (len < 3 || len > GW_CID_MAX_BYTES)
		return -1;
	__u8 head[3];
	if (bpf_xdp_load_bytes(ctx, off, head, sizeof(head)))
		return -1;
	if (head[0] != GW_CID_MARKER)
		return -1;
	__u32 key = ((__u32)head[1] << 8) | head[2];
	if (key >= 2 * GW_MAX_CPUS)
		return -1;
	*cpu = key % GW_MAX_CPUS;
	return 0;
}

#endif
