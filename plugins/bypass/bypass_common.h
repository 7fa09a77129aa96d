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
	/* select = "auto" only: */
	__u64 auto_accelerated;  /* connections the service's decision accelerated */
	__u64 auto_kept_tcp;     /* connections kept on TCP (learning or decision) */
	__u64 samples_tcp;       /* learning samples taken on the TCP path */
	__u64 learn_callbacks;   /* sendmsg callbacks run for learning (its cost) */
	__u64 rcvbuf_raised;     /* accelerated sockets whose SO_RCVBUF was raised */
	__u64 half_close_reads;  /* ends that received data after their
				  * half-close: their service is kept on TCP */
	__u64 skipped_half_close;/* connections kept on TCP because their
				  * service half-closes (both modes) */
	__u64 skipped_unproven;  /* select = "all": connections kept on TCP
				  * because no connection of their service
				  * has closed cleanly yet */
	__u64 clean_closes;      /* client ends that closed having exchanged
				  * data without half-closing and reading on:
				  * what proves a service (both modes) */
	__u64 pad[1];
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
	__u64 queue_bound;       /* times a socket moved to TCP because the
				  * peer's queue reached half its sk_rcvbuf */
	__u64 queue_resumed;     /* times it came back once TCP had drained */
	__u64 passed_overflow;   /* messages passed while over the bound */
	__u64 samples_accel;     /* learning samples taken on accelerated sockets */
	__u64 passed_no_index;   /* passed: sockops' sock_index is not shared
				  * with this instance (the peer's queue
				  * cannot be read) */
	__u64 sent_after_half_close; /* services marked: a message went to a
				      * peer that had half-closed */
	__u64 pad[3];
};

/* ---------------------------------------------------------------- select
 * select = "auto": each connection is accelerated or not at establishment,
 * from what earlier connections of the same *service* (the listening port
 * within a netns) showed. Design and numbers: docs/sockops.md, "Auto". */
enum bypass_select {
	BYPASS_SELECT_ALL = 0,
	BYPASS_SELECT_AUTO = 1,
};

enum bypass_decision {
	BYPASS_DECIDE_LEARNING = 0,   /* too few samples yet: TCP */
	BYPASS_DECIDE_ACCELERATE = 1,
	BYPASS_DECIDE_TCP = 2,
};

enum bypass_shape {
	BYPASS_SHAPE_UNKNOWN = 0,
	BYPASS_SHAPE_REQUEST_RESPONSE = 1, /* writes alternate with the peer's */
	BYPASS_SHAPE_BULK_SMALL = 2,       /* one-way, mean write < large_write */
	BYPASS_SHAPE_BULK_LARGE = 3,       /* one-way, mean write >= large_write */
	BYPASS_SHAPE_QUEUE_GROWS = 4,      /* a peer let the queue reach the bound */
	BYPASS_SHAPE_HALF_CLOSE = 5,       /* an end half-closed and read on */
	BYPASS_SHAPE_UNPROVEN = 6,         /* no connection closed cleanly yet */
};

/* `services` key: the listening port within a network namespace. */
struct bypass_service_key {
	__u64 netns;
	__u32 port;  /* the server end's local port, host order */
	__u32 pad;
};

/* `services` value (named fields in `bpftool map dump pinned`). Updated
 * without locks from any CPU: the scores are estimates, the counters are
 * atomic adds. */
struct bypass_service {
	__u32 decision;          /* enum bypass_decision, for the next connection */
	__u32 shape;             /* enum bypass_shape the decision came from */
	__u32 rr_score;          /* EWMA (1/4) of samples that alternated, 0..1024 */
	__u32 queue_strikes;     /* > 0: TCP; a long overflow sets it, each sample decays it */
	__u64 avg_write;         /* EWMA (1/4) of the mean write of one-way samples, bytes */
	__u64 samples;           /* samples folded in (one per writing connection end) */
	__u64 accelerated;       /* connections accelerated by the decision */
	__u64 kept_tcp;          /* connections kept on TCP by the decision */
	__u64 queue_bound_hits;  /* accelerated sockets moved to TCP by the queue bound */
	__u64 last_sample_ns;    /* bpf_ktime_get_ns() of the last sample */
	__u32 scored;            /* 1 once a sample set the scores */
	__u32 half_closes;       /* connection ends that half-closed and could
				  * still read: never accelerated again
				  * (docs/sockops.md, "Blocking readers") */
	__u32 clean_closes;      /* client ends that closed after exchanging
				  * data without half-closing and reading on;
				  * 0: the service is unproven and stays on
				  * TCP (both modes) */
	__u32 pad;
};

/* Per-socket state (BPF_MAP_TYPE_SK_STORAGE `sock_state`, owned by sockops,
 * shared with sockmsg through the manifest; freed with the socket). */
struct bypass_sock_state {
	__u64 netns;     /* service key of this connection (auto mode) */
	__u32 port;
	__u32 flags;     /* BYPASS_SK_* */
	__u32 msgs;      /* messages in the current learning window */
	__u32 turns;     /* of those, messages that answered the peer */
	__u64 bytes;     /* bytes written in the window */
	__u32 last_rx;   /* TCP: bytes_received at the previous write;
			  * accelerated: the peer's `sent` seen then */
	__u32 last_seq;  /* TCP: write_seq after the previous write */
	__u32 sent;      /* accelerated: messages sent (peers read it) */
	__u32 tcp_path;  /* 1 once a message of this socket took the TCP path */
	__u32 next_window; /* accelerated: messages until the next window */
	__u32 overflow;  /* 1: on TCP because the peer's queue reached the bound */
	__u32 resumes;   /* times it came back from an overflow */
	__u32 rx_at_fin; /* bytes_received when it half-closed (FIN_WAIT1) */
	__u64 reserved;  /* was the peer's address; the verdict now looks the
			  * peer up in the sockhash for every message */
	__u64 overflow_ns; /* when the current overflow started */
};

#define BYPASS_SK_LEARNING 1u /* a learning window is open */
#define BYPASS_SK_SERVICE 2u  /* netns/port name a service (auto mode) */
#define BYPASS_SK_ACCEL 4u    /* in the sockhash by an auto decision */
#define BYPASS_SK_STRUCK 8u   /* this overflow already struck its service */
#define BYPASS_SK_SERVER 16u  /* the accepted (server) end */
#define BYPASS_SK_HALF_CLOSED 32u /* shutdown(SHUT_WR) with the receive side open */
#define BYPASS_SK_HC_NOTED 64u    /* its service was marked half-closing */
#define BYPASS_SK_SENT_NOTED 128u /* its sock_index entry says it redirected */
#define BYPASS_SK_ON_TCP 256u     /* watched on the TCP path (not in the sockhash) */

/* Messages per learning window, and the gap between windows of a
 * long-lived accelerated socket. */
#define BYPASS_WINDOW_MSGS 32
#define BYPASS_REWINDOW_MSGS 4096

/* Value of sockops' `sock_index`: the kernel refuses BTF on sockhash maps,
 * so this plain hash mirrors the sockhash keys with named fields for
 * `bpftool map dump`. Entries leave with the socket (TCP_CLOSE). It is
 * also how sockmsg finds the peer of a message: an sk_msg program has no
 * trusted pointer to the peer socket (a sockhash lookup returns a
 * referenced socket that sk_msg may not release; the redirect target is
 * only reachable through kernel-struct walks, which newer verifiers refuse
 * to hand to helpers), so sockops records each socket's address here at
 * insertion and sockmsg reads the peer's queue through it with
 * bpf_probe_read_kernel. An entry exists before its socket enters the
 * sockhash. */
struct bypass_sock_info {
	__u64 cookie;      /* socket cookie, as the sockhash value reads */
	__u64 since_ns;    /* bpf_ktime_get_ns() at insertion */
	__u64 sk;          /* the socket's kernel address (read with
			    * bpf_probe_read_kernel only, never handed to a
			    * helper: TCP sockets are SLAB_TYPESAFE_BY_RCU, and
			    * a stale read only misjudges a bound) */
	__u32 sent;        /* auto: messages sockmsg redirected from it (its
			    * peer reads this to tell an answer) */
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

/* Learned per-service state: sockops owns it, sockmsg adds the samples of
 * accelerated sockets when the manifest shares it. */
#define BYPASS_SERVICES_MAX 4096
#define BYPASS_SERVICES_DEF                                    \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);           \
		__uint(max_entries, BYPASS_SERVICES_MAX);      \
		__type(key, struct bypass_service_key);        \
		__type(value, struct bypass_service);          \
	} services SEC(".maps")

/* sockops owns it; sockmsg reads the peer's entry (shared through the
 * manifest: `sock_index = "<sockops instance>"`). */
#define BYPASS_SOCK_INDEX_DEF                                  \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_HASH);               \
		__uint(max_entries, BYPASS_MAX_SOCKETS);       \
		__type(key, struct bypass_key);                \
		__type(value, struct bypass_sock_info);        \
	} sock_index SEC(".maps")

/* Service *k's entry in `services_map`, created empty if it has none yet;
 * NULL when the map is full. */
static __always_inline struct bypass_service *
bypass_service_get(void *services_map, const struct bypass_service_key *k)
{
	struct bypass_service *svc = bpf_map_lookup_elem(services_map, k);

	if (!svc) {
		struct bypass_service fresh = {};

		bpf_map_update_elem(services_map, k, &fresh, BPF_NOEXIST);
		svc = bpf_map_lookup_elem(services_map, k);
	}
	return svc;
}

/* A connection end of this service half-closed and then received data:
 * its blocking readers can be failed by the kernel (docs/sockops.md,
 * "Blocking readers"), so no later connection of the service is
 * accelerated. Returns 1 when it marked. */
#define BYPASS_MARK_HALF_CLOSE(services_map, st)                             \
	({                                                                     \
		int __marked = 0;                                              \
		if (((st)->flags & BYPASS_SK_SERVICE) &&                       \
		    !((st)->flags & BYPASS_SK_HC_NOTED)) {                     \
			struct bypass_service_key __k = { .netns = (st)->netns, \
							  .port = (st)->port };  \
			struct bypass_service *__s =                           \
				bypass_service_get(services_map, &__k);        \
			if (__s) {                                             \
				__sync_fetch_and_add(&__s->half_closes, 1);    \
				(st)->flags |= BYPASS_SK_HC_NOTED;             \
				__marked = 1;                                  \
			}                                                      \
		}                                                              \
		__marked;                                                      \
	})

#define BYPASS_SOCK_STATE_DEF                                  \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_SK_STORAGE);         \
		__uint(map_flags, BPF_F_NO_PREALLOC);          \
		__type(key, int);                              \
		__type(value, struct bypass_sock_state);       \
	} sock_state SEC(".maps")
#endif

#endif
