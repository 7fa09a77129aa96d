/* BPF-only helpers shared by sockops.bpf.c and sockmsg.bpf.c: building the
 * sockhash key from a sock_ops or sk_msg context. Both contexts expose the
 * same address/port fields with the same byte orders (remote_port: network
 * order in the upper 16 bits of the u32; local_port: host order), so one
 * macro fills the key for either and the two sides cannot drift apart. */
#ifndef BPFMGR_BYPASS_KEY_BPF_H
#define BPFMGR_BYPASS_KEY_BPF_H

#include "bypass_common.h"

static __always_inline int bypass_v4mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

/* Fills *key from ctx (struct bpf_sock_ops * or struct sk_msg_md *).
 * Returns 0, or -1 for a family other than AF_INET / AF_INET6. */
#define BYPASS_FILL_KEY(key, ctx, netns_cookie)                               \
	({                                                                    \
		int __ret = 0;                                                \
		__u32 __fam = (ctx)->family;                                  \
		__builtin_memset((key), 0, sizeof(*(key)));                   \
		(key)->netns = (netns_cookie);                                \
		(key)->local_port = (__u16)(ctx)->local_port;                 \
		(key)->remote_port = (__u16)bpf_ntohl((ctx)->remote_port);    \
		if (__fam == AF_INET) {                                       \
			(key)->family = AF_INET;                              \
			(key)->local_ip[0] = (ctx)->local_ip4;                \
			(key)->remote_ip[0] = (ctx)->remote_ip4;              \
		} else if (__fam == AF_INET6) {                               \
			__u32 __l0 = (ctx)->local_ip6[0];                     \
			__u32 __l1 = (ctx)->local_ip6[1];                     \
			__u32 __l2 = (ctx)->local_ip6[2];                     \
			__u32 __l3 = (ctx)->local_ip6[3];                     \
			__u32 __r0 = (ctx)->remote_ip6[0];                    \
			__u32 __r1 = (ctx)->remote_ip6[1];                    \
			__u32 __r2 = (ctx)->remote_ip6[2];                    \
			__u32 __r3 = (ctx)->remote_ip6[3];                    \
			if (bypass_v4mapped(__l0, __l1, __l2) &&              \
			    bypass_v4mapped(__r0, __r1, __r2)) {              \
				(key)->family = AF_INET;                      \
				(key)->local_ip[0] = __l3;                    \
				(key)->remote_ip[0] = __r3;                   \
			} else {                                              \
				(key)->family = AF_INET6;                     \
				(key)->local_ip[0] = __l0;                    \
				(key)->local_ip[1] = __l1;                    \
				(key)->local_ip[2] = __l2;                    \
				(key)->local_ip[3] = __l3;                    \
				(key)->remote_ip[0] = __r0;                   \
				(key)->remote_ip[1] = __r1;                   \
				(key)->remote_ip[2] = __r2;                   \
				(key)->remote_ip[3] = __r3;                   \
			}                                                     \
		} else {                                                      \
			__ret = -1;                                           \
		}                                                             \
		__ret;                                                        \
	})

/* The key of the other end of the same connection. */
static __always_inline void bypass_peer_key(const struct bypass_key *k,
					    struct bypass_key *peer)
{
	peer->netns = k->netns;
	peer->family = k->family;
	peer->local_port = k->remote_port;
	peer->remote_port = k->local_port;
	peer->local_ip[0] = k->remote_ip[0];
	peer->local_ip[1] = k->remote_ip[1];
	peer->local_ip[2] = k->remote_ip[2];
	peer->local_ip[3] = k->remote_ip[3];
	peer->remote_ip[0] = k->local_ip[0];
	peer->remote_ip[1] = k->local_ip[1];
	peer->remote_ip[2] = k->local_ip[2];
	peer->remote_ip[3] = k->local_ip[3];
}

#endif
