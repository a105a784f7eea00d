/* ExpressGateway kernel datapath ABI: every key/value struct user space touches.
 *
 * Owns: map key/value layouts and limits shared by the BPF programs and kernel/maps.py.
 * Must never: contain anything cffi's cdef cannot parse outside the lines starting with '#'
 * (kernel/maps.py strips those, keeping only '#define NAME <integer>').
 * Every struct uses fixed-width types and explicit padding (no compiler-inserted holes).
 */
#ifndef GW_ABI_H
#define GW_ABI_H
#ifdef __BPF__
#include <linux/types.h>
#endif

#define GW_ABI_VERSION 2
#define GW_MAX_CPUS 128
#define GW_MAX_SLOTS 256
#define GW_MAX_QUIC_PORTS 64
#define GW_DENY_ENTRIES 16384
#define GW_RATE_ENTRIES 65536
#define GW_MAX_GROUPS 64
#define GW_GROUP_SLOTS 256
#define GW_CID_MAX_BYTES 20
#define GW_CID_MARKER 230
#define GW_NO_KEY 4294967295
#define GW_GROUP_QUIC 1

/* gw_xdp_config[0]: runtime configuration of the XDP steering program. */
struct gw_xdp_config {
	__u32 nslots;          /* live entries in gw_cpu_slots; 0 = do not steer (PASS) */
	__u32 hash_seed;       /* seed of the flow / DCID hash */
	__u32 quic_short_dcid_len; /* DCID length of QUIC short-header packets (<= 20) */
	__u32 new_flows_per_s; /* per-source new-flow cap; 0 = off */
	__u32 new_flow_v6_prefix; /* IPv6 sources share the cap per this prefix; 0 or 128 = per address */
	__u32 pad;
};

/* gw_cpu_map value: user-space mirror of the UAPI struct bpf_cpumap_val. */
struct gw_cpumap_value {
	__u32 qsize;   /* frames queued per CPU before drops */
	__u32 prog_fd; /* second-stage program; 0 = none */
};

/* gw_quic_ports key: UDP destination port in host byte order. */
struct gw_port_key {
	__u16 port;
	__u16 pad;
};

/* gw_deny_v4 / gw_deny_v6 keys (LPM trie: prefix length first, address bytes in wire order). */
struct gw_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct gw_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* gw_rate key: a source address (IPv4 in the first 4 bytes, family 4 or 6); an IPv6
 * source is cut to gw_xdp_config.new_flow_v6_prefix bits (the rest zero). */
struct gw_rate_key {
	__u8 addr[16];
	__u32 family;
};

/* gw_rate value: new flows seen in the current one-second window. */
struct gw_rate_state {
	__u64 window_start_ns;
	__u32 count;
	__u32 pad;
};

/* gw_trace (per CPU, index 0): the last decision, written only when rodata gw_trace_on. */
struct gw_trace {
	__u32 hash;
	__u32 cpu;
	__u32 reason;
	__u32 slot;
};

/* gw_rp_groups key: a reuseport group = (local port host order, ip protocol, family 4/6). */
struct gw_rp_group_key {
	__u16 port;
	__u8 proto;
	__u8 family;
};

/* gw_rp_groups value: where the group's sockets live in gw_rp_socks. */
struct gw_rp_group {
	__u32 index;               /* group index: socks at index*GW_GROUP_SLOTS + key */
	__u32 flags;               /* GW_GROUP_QUIC: decode the worker key from the DCID */
	__u32 quic_short_dcid_len; /* DCID length of short-header packets */
	__u32 pad;
};

/* Per-CPU verdict counters of xdp_steer, indexed by reason. */
enum gw_xdp_reason {
	GW_XDP_REDIRECT_TCP = 0,
	GW_XDP_REDIRECT_UDP = 1,
	GW_XDP_REDIRECT_QUIC = 2,
	GW_XDP_REDIRECT_FRAGMENT = 3,
	GW_XDP_PASS_NOT_IP = 4,
	GW_XDP_PASS_TRUNCATED = 5,
	GW_XDP_PASS_OTHER_PROTO = 6,
	GW_XDP_PASS_NO_SLOTS = 7,
	GW_XDP_PASS_NO_CPU = 8,
	GW_XDP_PASS_QUIC_MALFORMED = 9,
	GW_XDP_DROP_DENIED = 10,
	GW_XDP_DROP_RATE = 11,
	GW_XDP_REDIRECT_QUIC_OWNER = 12, /* to the CPU our connection ID names */
	GW_XDP_REASONS = 13
};

/* Per-CPU counters of reuseport_select, indexed by reason. */
enum gw_rp_reason {
	GW_RP_SELECTED_CPU = 0,
	GW_RP_SELECTED_CID = 1,
	GW_RP_FALLBACK_NO_GROUP = 2,
	GW_RP_FALLBACK_EMPTY_SLOT = 3,
	GW_RP_FALLBACK_NO_KEY = 4,
	GW_RP_REASONS = 5
};

#endif
