// SPDX-License-Identifier: GPL-2.0
/* reuseport_select: inside one SO_REUSEPORT group pick the socket of the worker on the
 * receiving CPU (TCP, new QUIC connections) or the worker whose key is encoded in the QUIC
 * destination connection ID. An empty slot or an unknown group leaves the choice to the
 * kernel's hash (SK_PASS without selecting); it never drops. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, GW_MAX_GROUPS * GW_GROUP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} gw_rp_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GW_MAX_GROUPS);
	__type(key, struct gw_rp_group_key);
	__type(value, struct gw_rp_group);
} gw_rp_groups SEC(".maps");

/* (group index * GW_MAX_CPUS + cpu) -> worker key of that CPU's current worker */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GW_MAX_GROUPS * GW_MAX_CPUS);
	__type(key, __u32);
	__type(value, __u32);
} gw_rp_cpu_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GW_RP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} gw_rp_stats SEC(".maps");

static __always_inline int gw_rp_count(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&gw_rp_stats, &reason);
	if (n)
		*n += 1;
	return SK_PASS;
}

/* Worker key from the DCID (GW_CID_MARKER, key_hi, key_lo, ...), or GW_NO_KEY. */
static __always_inline __u32 gw_cid_worker_key(struct sk_reuseport_md *md, __u32 short_len)
{
	__u8 head[9];
	/* data starts at the UDP header: 8 bytes of UDP, then the QUIC first byte */
	if (bpf_skb_load_bytes(md, 8, head, sizeof(head)))
		return GW_NO_KEY;
	__u32 off;
	__u32 len;
	if (head[0] & 0x80) {
		len = head[5];
		off = 8 + 6;
	} else {
		len = short_len;
		off = 8 + 1;
	}
	if (len < 3 || len > GW_CID_MAX_BYTES)
		return GW_NO_KEY;
	__u8 cid[3];
	if (bpf_skb_load_bytes(md, off, cid, sizeof(cid)))
		return GW_NO_KEY;
	if (cid[0] != GW_CID_MARKER)
		return GW_NO_KEY;
	__u32 key = ((__u32)cid[1] << 8) | cid[2];
	return key < GW_GROUP_SLOTS ? key : GW_NO_KEY;
}

SEC("sk_reuseport")
int reuseport_select(struct sk_reuseport_md *md)
{
	struct bpf_sock *sk = md->sk;
	if (!sk)
		return gw_rp_count(GW_RP_FALLBACK_NO_GROUP);
	struct gw_rp_group_key gk = {
		.port = (__u16)sk->src_port,
		.proto = (__u8)md->ip_protocol,
		.family = sk->family == 10 ? 6 : 4,
	};
	struct gw_rp_group *g = bpf_map_lookup_elem(&gw_rp_groups, &gk);
	if (!g || g->index >= GW_MAX_GROUPS)
		return gw_rp_count(GW_RP_FALLBACK_NO_GROUP);
	__u32 base = g->index * GW_GROUP_SLOTS;

	if ((g->flags & GW_GROUP_QUIC) && md->ip_protocol == IPPROTO_UDP) {
		__u32 key = gw_cid_worker_key(md, g->quic_short_dcid_len);
		if (key != GW_NO_KEY) {
			__u32 idx = base + key;
			if (bpf_sk_select_reuseport(md, &gw_rp_socks, &idx, 0) == 0)
				return gw_rp_count(GW_RP_SELECTED_CID);
		}
	}
	__u32 cpu = bpf_get_smp_processor_id();
	if (cpu >= GW_MAX_CPUS)
		return gw_rp_count(GW_RP_FALLBACK_NO_KEY);
	__u32 ck = g->index * GW_MAX_CPUS + cpu;
	__u32 *wkey = bpf_map_lookup_elem(&gw_rp_cpu_keys, &ck);
	if (!wkey || *wkey >= GW_GROUP_SLOTS)
		return gw_rp_count(GW_RP_FALLBACK_NO_KEY);
	__u32 idx = base + *wkey;
	if (bpf_sk_select_reuseport(md, &gw_rp_socks, &idx, 0) == 0)
		return gw_rp_count(GW_RP_SELECTED_CPU);
	return gw_rp_count(GW_RP_FALLBACK_EMPTY_SLOT);
}

char LICENSE[] SEC("license") = "GPL";
