/* Flow and QUIC DCID hashes. gateway/steering.py reproduces them bit for bit. */
#ifndef GW_HASH_H
#define GW_HASH_H
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define GW_FNV_BASIS 0x811c9dc5U
#define GW_FNV_PRIME 0x01000193U

static __always_inline __u32 gw_fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 gw_mix(__u32 h, __u32 word)
{
	return gw_fmix32(h ^ word);
}

/* Address words are big-endian (bpf_ntohl of the wire value); ports in host order. */
static __always_inline __u32 gw_hash_tail(__u32 h, __u16 sport, __u16 dport, __u8 proto)
{
	h = gw_mix(h, ((__u32)sport << 16) | dport);
	return gw_mix(h, proto);
}

#endif
