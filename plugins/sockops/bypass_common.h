/* Contract between the sockops and sockmsg BPF programs and their C++
 * plugins: the sockhash key, the sockhash itself and the counter layouts.
 *
 * Included by BPF C (after bpfmgr/bpf_common.h, which brings vmlinux.h) and
 * by C++ (which checks the layouts with static_assert). Fixed-width types
 * only, every struct 8-byte aligned with explicit padding.
 */
#ifndef BPFMGR_BYPASS_COMMON_H
#define BPFMGR_BYPASS_COMMON_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* A socket as both ends see it. The sk_msg program builds the key of the
 * *peer* by swapping local and remote, so the two programs must fill every
 * field the same way:
 *  - netns: netns cookie, so identical 4-tuples in two network namespaces
 *    (127.0.0.1:80 in each) never name each other's sockets;
 *  - family: AF_INET or AF_INET6; an AF_INET6 socket talking to a
 *    v4-mapped address (::ffff:a.b.c.d) is stored as AF_INET, because its
 *    peer may be a plain AF_INET socket;
 *  - ports: host byte order, both of them;
 *  - addresses: network byte order, IPv4 in word 0 and zeros after.
 */
struct bypass_key {
	__u64 netns;
	__u32 family;
	__u16 local_port;
	__u16 remote_port;
	__u32 local_ip[4];
	__u32 remote_ip[4];
};

/* A CIDR or a single address (prefix_len 32/128) in sockops' .rodata
 * filters, written by the plugin before load. */
struct bypass_cidr {
	__u32 family;     /* AF_INET or AF_INET6 */
	__u32 prefix_len;
	__u32 addr[4];    /* network byte order, IPv4 in word 0 */
};

/* Sockets the sockhash holds at most: two per accelerated connection.
 * 65536 = 32768 concurrent same-host connections; a full map only means new
 * connections take the normal path (counted as insert_failed). */
#define BYPASS_MAX_SOCKETS 65536

/* sockops counters: one PERCPU_ARRAY slot holding this struct. */
struct sockops_counters {
	__u64 inserted;          /* sockets added to the sockhash */
	__u64 skipped_not_local; /* an end is not a local address */
	__u64 skipped_filtered;  /* excluded by ports / CIDR options */
	__u64 skipped_no_peer;   /* server end whose client end is not in the map */
	__u64 insert_failed;     /* bpf_sock_hash_update() returned an error */
	__u64 half_closed;       /* accelerated sockets that sent a FIN */
	__u64 pad[2];
};

/* sockmsg counters: one PERCPU_ARRAY slot holding this struct. */
struct sockmsg_counters {
	__u64 redirected_msgs;   /* sendmsg() calls delivered to the peer */
	__u64 redirected_bytes;
	__u64 passed_msgs;       /* left on the TCP path (no peer, policy) */
	__u64 passed_bytes;
	__u64 redirect_failed;   /* the peer is not in the sockhash (passed) */
	__u64 passed_draining;   /* passed because the instance is unpinning */
	__u64 passed_sticky;     /* passed because this socket already sent on
				  * the TCP path (never switch back: the peer
				  * would read redirected bytes first) */
	__u64 pad;
};

/* Value of sockops' `sock_index`: the kernel refuses BTF on sockhash maps,
 * so this plain hash mirrors the sockhash keys with named fields for
 * `bpftool map dump`. Entries leave with the socket (TCP_CLOSE). */
struct bypass_sock_info {
	__u64 cookie;      /* socket cookie, as the sockhash value reads */
	__u64 since_ns;    /* bpf_ktime_get_ns() at insertion */
};

/* sockmsg per-socket state (BPF_MAP_TYPE_SK_STORAGE, freed with the
 * socket). */
struct sockmsg_sk_state {
	__u32 tcp_path; /* 1 once a message of this socket took the TCP path */
	__u32 pad;
};

/* sockmsg control: one ARRAY slot. The plugin sets `draining` before the
 * instance is unpinned: from then on every message takes the TCP path, so
 * sockets still in the (now unreferenced) sockhash keep working and nothing
 * new is queued on a peer's ingress list. */
struct sockmsg_ctl {
	__u32 draining;
	__u32 pad;
};

#ifdef __bpf__
/* The one sockhash definition: sockops owns and pins it, sockmsg declares
 * the identical map and the manifest maps it onto sockops' pinned one. */
#define BYPASS_SOCK_HASH_DEF                                   \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_SOCKHASH);           \
		__uint(max_entries, BYPASS_MAX_SOCKETS);       \
		__type(key, struct bypass_key);                \
		__type(value, __u64);                          \
	} sock_hash SEC(".maps")
#endif

#endif
