// SPDX-License-Identifier: GPL-2.0
/* xdp_steer: hash each flow (QUIC: its DCID) and redirect it through a cpumap to the CPU
 * of a live worker; a QUIC packet whose DCID is one we minted goes to the CPU it names
 * (the owner's, where its socket is read) when that CPU is live; drop deny-listed sources
 * and sources over their new-flow cap.
 * Anything it does not understand is passed and counted by reason, never dropped. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "hash.h"
#include "maps.h"
#include "parse.h"

const volatile __u32 gw_trace_on = 0;

static __always_inline int gw_denied(struct gw_flow *f)
{
	if (f->family == 4) {
		struct gw_lpm_v4 k = {.prefixlen = 32};
		__builtin_memcpy(k.addr, f->saddr, 4);
		return bpf_map_lookup_elem(&gw_deny_v4, &k) != 0;
	}
	struct gw_lpm_v6 k6 = {.prefixlen = 128};
	__builtin_memcpy(k6.addr, f->saddr, 16);
	return bpf_map_lookup_elem(&gw_deny_v6, &k6) != 0;
}

/* Keep the first `prefix` bits of an IPv6 address (0 or >= 128: all of it). One host owns a
 * whole /64 and may source from any address in it, so a per-address cap would not hold. */
static __always_inline void gw_mask_v6(__u8 *addr, __u32 prefix)
{
	if (prefix == 0 || prefix >= 128)
		return;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		int keep = (int)prefix - i * 8;
		if (keep <= 0)
			addr[i] = 0;
		else if (keep < 8)
			addr[i] &= (__u8)(0xff << (8 - keep));
	}
}

/* One-second window per source (IPv6: per prefix); returns 1 when this new flow is over the cap. */
static __always_inline int gw_over_rate(struct gw_flow *f, __u32 cap, __u32 v6_prefix)
{
	struct gw_rate_key k = {.family = f->family};
	__builtin_memcpy(k.addr, f->saddr, 16);
	if (f->family == 6)
		gw_mask_v6(k.addr, v6_prefix);
	__u64 now = bpf_ktime_get_ns();
	struct gw_rate_state *st = bpf_map_lookup_elem(&gw_rate, &k);
	if (!st) {
		struct gw_rate_state fresh = {.window_start_ns = now, .count = 1};
		bpf_map_update_elem(&gw_rate, &k, &fresh, BPF_ANY);
		return cap < 1;
	}
	if (now - st->window_start_ns >= 1000000000ULL) {
		st->window_start_ns = now;
		st->count = 0;
	}
	st->count += 1;
	return st->count > cap;
}

static __always_inline int gw_verdict(__u32 reason, int action, __u32 hash, __u32 cpu, __u32 slot)
{
	gw_count(reason);
	if (gw_trace_on) {
		__u32 zero = 0;
		struct gw_trace *t = bpf_map_lookup_elem(&gw_trace, &zero);
		if (t) {
			t->hash = hash;
			t->cpu = cpu;
			t->reason = reason;
			t->slot = slot;
		}
	}
	return action;
}

SEC("xdp")
int xdp_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gw_xdp_config *cfg = bpf_map_lookup_elem(&gw_config, &zero);
	if (!cfg)
		return gw_verdict(GW_XDP_PASS_NO_SLOTS, XDP_PASS, 0, 0, 0);

	struct gw_flow f = {};
	int st = gw_parse(data, data_end, cfg->hash_seed, &f);
	if (f.family && gw_denied(&f))
		return gw_verdict(GW_XDP_DROP_DENIED, XDP_DROP, 0, 0, 0);
	if (st == GW_NOT_IP)
		return gw_verdict(GW_XDP_PASS_NOT_IP, XDP_PASS, 0, 0, 0);
	if (st == GW_TRUNCATED)
		return gw_verdict(GW_XDP_PASS_TRUNCATED, XDP_PASS, 0, 0, 0);
	if (st != GW_OK)
		return gw_verdict(GW_XDP_PASS_OTHER_PROTO, XDP_PASS, 0, 0, 0);

	__u32 hash = f.hash;
	__u32 owner = GW_MAX_CPUS; /* the CPU our connection ID names; GW_MAX_CPUS: none */
	__u32 reason = f.fragment ? GW_XDP_REDIRECT_FRAGMENT
		       : f.proto == IPPROTO_TCP ? GW_XDP_REDIRECT_TCP : GW_XDP_REDIRECT_UDP;
	if (f.proto == IPPROTO_UDP && !f.fragment) {
		struct gw_port_key pk = {.port = f.dport};
		if (bpf_map_lookup_elem(&gw_quic_ports, &pk)) {
			__u8 *payload = f.l4_payload;
			__u32 cid_hash = 0;
			int q = gw_quic_dcid_hash(ctx, payload, data, data_end, cfg->quic_short_dcid_len,
						  cfg->hash_seed, &cid_hash);
			if (q < 0)
				return gw_verdict(GW_XDP_PASS_QUIC_MALFORMED, XDP_PASS, 0, 0, 0);
			if (q == 0)
				hash = cid_hash;
			if (q == 0 && gw_quic_owner_cpu(ctx, payload, data, data_end,
							cfg->quic_short_dcid_len, &owner) != 0)
				owner = GW_MAX_CPUS;
			reason = GW_XDP_REDIRECT_QUIC;
			/* a long-header Initial (type 0) opens a new connection */
			if ((void *)(payload + 1) <= data_end && (payload[0] & 0xb0) == 0x80)
				f.new_flow = 1;
		}
	}

	if (f.new_flow && cfg->new_flows_per_s &&
	    gw_over_rate(&f, cfg->new_flows_per_s, cfg->new_flow_v6_prefix))
		return gw_verdict(GW_XDP_DROP_RATE, XDP_DROP, hash, 0, 0);

	if (owner < GW_MAX_CPUS &&
	    bpf_redirect_map(&gw_cpu_map, owner, XDP_PASS) == XDP_REDIRECT)
		return gw_verdict(GW_XDP_REDIRECT_QUIC_OWNER, XDP_REDIRECT, hash, owner, 0);

	__u32 nslots = cfg->nslots;
	if (nslots == 0 || nslots > GW_MAX_SLOTS)
		return gw_verdict(GW_XDP_PASS_NO_SLOTS, XDP_PASS, hash, 0, 0);
	__u32 slot = hash % nslots;
	__u32 *cpu = bpf_map_lookup_elem(&gw_cpu_slots, &slot);
	if (!cpu)
		return gw_verdict(GW_XDP_PASS_NO_SLOTS, XDP_PASS, hash, 0, slot);
	__u32 target = *cpu;
	long action = bpf_redirect_map(&gw_cpu_map, target, XDP_PASS);
	if (action != XDP_REDIRECT)
		return gw_verdict(GW_XDP_PASS_NO_CPU, XDP_PASS, hash, target, slot);
	return gw_verdict(reason, XDP_REDIRECT, hash, target, slot);
}

char LICENSE[] SEC("license") = "GPL";
