/* Map definitions of xdp_steer and the counter helper. Layouts come from abi.h. */
#ifndef GW_MAPS_H
#define GW_MAPS_H
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gw_xdp_config);
} gw_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GW_MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} gw_cpu_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, GW_MAX_CPUS);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} gw_cpu_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GW_MAX_QUIC_PORTS);
	__type(key, struct gw_port_key);
	__type(value, __u32);
} gw_quic_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GW_DENY_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gw_lpm_v4);
	__type(value, __u32);
} gw_deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GW_DENY_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gw_lpm_v6);
	__type(value, __u32);
} gw_deny_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GW_RATE_ENTRIES);
	__type(key, struct gw_rate_key);
	__type(value, struct gw_rate_state);
} gw_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GW_XDP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} gw_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gw_trace);
} gw_trace SEC(".maps");

static __always_inline void gw_count(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&gw_stats, &reason);
	if (n)
		*n += 1;
}

#endif
