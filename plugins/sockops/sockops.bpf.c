// SPDX-License-Identifier: GPL-2.0
/* sockops: records established same-host TCP sockets in a sockhash so that
 * the sockmsg plugin can hand each sendmsg() straight to the peer socket.
 * Design notes: docs/sockops.md. */
#include "bpfmgr/bpf_common.h"
#include "bypass_key.bpf.h"
#include "bypass_learn.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define MAX_PORTS 16
#define MAX_CIDRS 8
#define MAX_HOST_ADDRS 16

/* Filled by the plugin's before_load from the instance options. */
const volatile __u32 cfg_nr_ports = 0;        /* 0: every port */
const volatile __u16 cfg_ports[MAX_PORTS] = {};
const volatile __u32 cfg_nr_exclude_ports = 0;
const volatile __u16 cfg_exclude_ports[MAX_PORTS] = {};
const volatile __u32 cfg_nr_cidrs = 0;        /* 0: any local address */
const volatile struct bypass_cidr cfg_cidrs[MAX_CIDRS] = {};
/* Addresses of this host's interfaces (besides loopback) at load time. */
const volatile __u32 cfg_nr_host_addrs = 0;
const volatile struct bypass_cidr cfg_host_addrs[MAX_HOST_ADDRS] = {};
/* select: BYPASS_SELECT_ALL or BYPASS_SELECT_AUTO. */
const volatile __u32 cfg_select = BYPASS_SELECT_ALL;
/* auto: one-way services whose mean write is at least this are accelerated. */
const volatile __u64 cfg_large_write = 65536;
/* auto: samples a service needs before it may be accelerated. */
const volatile __u32 cfg_min_samples = 2;
/* SO_RCVBUF given to accelerated sockets that did not set their own (0:
 * leave it); sockmsg's queue bound is half the receiver's sk_rcvbuf. */
const volatile __u32 cfg_rcvbuf = 0;

#ifndef SOL_SOCKET
#define SOL_SOCKET 1
#endif
#ifndef SO_RCVBUF
#define SO_RCVBUF 8
#endif
#define SOCK_RCVBUF_LOCK 2

BYPASS_SOCK_HASH_DEF;

/* Mirror of the sockhash with BTF, and how sockmsg finds a peer's queue
 * (see bypass_common.h). */
BYPASS_SOCK_INDEX_DEF;

BYPASS_SERVICES_DEF;
BYPASS_SOCK_STATE_DEF;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sockops_counters);
} sockops_counters SEC(".maps");

static __always_inline struct sockops_counters *counters(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&sockops_counters, &zero);
}

#define COUNT(field)                                   \
	do {                                           \
		struct sockops_counters *__c = counters(); \
		if (__c)                               \
			__c->field++;                  \
	} while (0)

static __always_inline int addr_in(const volatile struct bypass_cidr *c,
				   __u32 family, const __u32 *ip)
{
	if (c->family != family)
		return 0;
	__u32 left = c->prefix_len;
	for (int w = 0; w < 4; w++) {
		if (left == 0)
			return 1;
		__u32 bits = left >= 32 ? 32 : left;
		__u32 mask = bits == 32 ? 0xffffffffu : ~(0xffffffffu >> bits);
		if ((bpf_ntohl(ip[w]) & mask) != (bpf_ntohl(c->addr[w]) & mask))
			return 0;
		left -= bits;
	}
	return 1;
}

static __always_inline int is_loopback(__u32 family, const __u32 *ip)
{
	if (family == AF_INET)
		return (bpf_ntohl(ip[0]) >> 24) == 127;
	return ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == bpf_htonl(1);
}

static __always_inline int is_host_addr(__u32 family, const __u32 *ip)
{
	if (is_loopback(family, ip))
		return 1;
	for (__u32 i = 0; i < MAX_HOST_ADDRS; i++) {
		if (i >= cfg_nr_host_addrs)
			break;
		if (addr_in(&cfg_host_addrs[i], family, ip))
			return 1;
	}
	return 0;
}

static __always_inline int both_local(const struct bypass_key *k)
{
	/* A connection to one of our own addresses uses it as the source too,
	 * so local == remote is the common same-host case off loopback. */
	if (k->local_ip[0] == k->remote_ip[0] &&
	    k->local_ip[1] == k->remote_ip[1] &&
	    k->local_ip[2] == k->remote_ip[2] &&
	    k->local_ip[3] == k->remote_ip[3])
		return 1;
	return is_host_addr(k->family, k->local_ip) &&
	       is_host_addr(k->family, k->remote_ip);
}

static __always_inline int port_listed(const volatile __u16 *ports, __u32 n,
				       __u16 a, __u16 b)
{
	for (__u32 i = 0; i < MAX_PORTS; i++) {
		if (i >= n)
			break;
		if (ports[i] == a || ports[i] == b)
			return 1;
	}
	return 0;
}

static __always_inline int in_cidrs(__u32 family, const __u32 *ip)
{
	for (__u32 i = 0; i < MAX_CIDRS; i++) {
		if (i >= cfg_nr_cidrs)
			break;
		if (addr_in(&cfg_cidrs[i], family, ip))
			return 1;
	}
	return 0;
}

/* Options narrow what is accelerated; both ends decide identically. */
static __always_inline int filtered_out(const struct bypass_key *k)
{
	if (cfg_nr_ports &&
	    !port_listed(cfg_ports, cfg_nr_ports, k->local_port, k->remote_port))
		return 1;
	if (cfg_nr_exclude_ports &&
	    port_listed(cfg_exclude_ports, cfg_nr_exclude_ports, k->local_port,
			k->remote_port))
		return 1;
	if (cfg_nr_cidrs &&
	    !(in_cidrs(k->family, k->local_ip) && in_cidrs(k->family, k->remote_ip)))
		return 1;
	return 0;
}

/* select = "all": whether a new connection of service *k may be
 * accelerated. Not when one of its connection ends half-closed and read on:
 * such a reader can be told EAGAIN by the kernel's sockmap recvmsg
 * (docs/sockops.md, "Blocking readers"). Not before one of its connections
 * closed cleanly either: until then nothing says it does not (a service
 * starts on TCP, the path that cannot lose its blocking readers' bytes). */
static __always_inline int service_proven(const struct bypass_service_key *k)
{
	struct bypass_service *svc = bpf_map_lookup_elem(&services, k);
	if (svc && svc->half_closes) {
		COUNT(skipped_half_close);
		return 0;
	}
	if (!svc || !svc->clean_closes) {
		COUNT(skipped_unproven);
		return 0;
	}
	return 1;
}

/* The decision for a new connection of service *k, from its samples. */
static __always_inline int service_accelerates(const struct bypass_service_key *k)
{
	struct bypass_service *svc = bypass_service_get(&services, k);
	__u32 decision, shape;

	if (!svc)
		return 0;
	if (svc->half_closes) {
		decision = BYPASS_DECIDE_TCP;
		shape = BYPASS_SHAPE_HALF_CLOSE;
	} else if (svc->samples < cfg_min_samples) {
		decision = BYPASS_DECIDE_LEARNING;
		shape = BYPASS_SHAPE_UNKNOWN;
	} else if (!svc->clean_closes) {
		/* Samples come from the first writes, before a connection
		 * ends; how it ends (a half-close that reads on) only shows
		 * at its close. */
		decision = BYPASS_DECIDE_LEARNING;
		shape = BYPASS_SHAPE_UNPROVEN;
	} else if (svc->queue_strikes) {
		decision = BYPASS_DECIDE_TCP;
		shape = BYPASS_SHAPE_QUEUE_GROWS;
	} else if (svc->rr_score >= 512) {
		decision = BYPASS_DECIDE_ACCELERATE;
		shape = BYPASS_SHAPE_REQUEST_RESPONSE;
	} else if (svc->avg_write >= cfg_large_write) {
		decision = BYPASS_DECIDE_ACCELERATE;
		shape = BYPASS_SHAPE_BULK_LARGE;
	} else {
		decision = BYPASS_DECIDE_TCP;
		shape = BYPASS_SHAPE_BULK_SMALL;
	}
	svc->decision = decision;
	svc->shape = shape;
	if (decision == BYPASS_DECIDE_ACCELERATE) {
		__sync_fetch_and_add(&svc->accelerated, 1);
		return 1;
	}
	__sync_fetch_and_add(&svc->kept_tcp, 1);
	return 0;
}

static __always_inline struct bypass_sock_state *
new_state(struct bpf_sock_ops *skops, const struct bypass_service_key *svc,
	  __u32 flags)
{
	struct bpf_sock *sk = skops->sk;
	struct bypass_sock_state *st;

	if (!sk)
		return 0;
	st = bpf_sk_storage_get(&sock_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->netns = svc->netns;
	st->port = svc->port;
	st->flags = flags | BYPASS_SK_SERVICE | BYPASS_SK_LEARNING;
	st->msgs = 0;
	st->turns = 0;
	st->bytes = 0;
	st->last_rx = skops->bytes_received;
	st->last_seq = skops->snd_nxt; /* == write_seq: nothing written yet */
	st->next_window = BYPASS_REWINDOW_MSGS;
	return st;
}

/* A TCP-path connection end of an auto service: learn from its first
 * BYPASS_WINDOW_MSGS writes through the per-sendmsg callback (6.15+), which
 * is switched off again once the window is full; the state callback takes
 * a shorter connection's sample at close. */
static __always_inline void learn_on_tcp(struct bpf_sock_ops *skops,
					 const struct bypass_service_key *svc)
{
	int on = SK_BPF_CB_TX_TIMESTAMPING;

	if (!new_state(skops, svc, BYPASS_SK_ON_TCP |
					   (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB
						    ? BYPASS_SK_SERVER : 0)))
		return;
	bpf_setsockopt(skops, SOL_SOCKET, SK_BPF_CB_FLAGS, &on, sizeof(on));
	/* The timestamping callback may not change socket options (it is not
	 * a locked context), so the window is closed from the first RTT
	 * callback (an ACK of our data) after it is full. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG |
						 BPF_SOCK_OPS_RTT_CB_FLAG);
}

/* BPF_SOCK_OPS_RTT_CB while learning: once the window is closed, switch
 * the sendmsg and RTT callbacks off. */
static __always_inline void learn_close(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct bypass_sock_state *st;
	int off = 0;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (st && (st->flags & BYPASS_SK_LEARNING))
		return;
	bpf_setsockopt(skops, SOL_SOCKET, SK_BPF_CB_FLAGS, &off, sizeof(off));
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
						 ~BPF_SOCK_OPS_RTT_CB_FLAG);
}


/* BPF_SOCK_OPS_TSTAMP_SENDMSG_CB: once per sendmsg() that queued bytes,
 * socket locked, after the bytes were queued. */
static __always_inline void learn_sendmsg(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct bypass_sock_state *st;
	struct tcp_sock *tp;

	COUNT(learn_callbacks);
	if (!sk)
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || !(st->flags & BYPASS_SK_LEARNING))
		return; /* closed; the next RTT callback switches us off */
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	__u32 seq = tp->write_seq;
	__u32 rx = (__u32)tp->bytes_received;
	__u32 una = tp->snd_una;
	/* An answer: the peer sent something since our previous write, had
	 * everything we wrote before (acknowledged), and we read all it sent
	 * (it waits for us). Streams that happen to flow both ways, like an
	 * echo, usually have bytes unacknowledged or unread. */
	if (st->msgs && rx != st->last_rx && (__s32)(una - st->last_seq) >= 0 &&
	    tp->copied_seq == tp->rcv_nxt)
		st->turns++;
	st->bytes += seq - st->last_seq;
	st->last_seq = seq;
	st->last_rx = rx;
	if (++st->msgs >= BYPASS_WINDOW_MSGS) {
		if (bypass_fold_sample(&services, st))
			COUNT(samples_tcp);
	}
}

/* select = "all": only the service (no learning), for note_half_close. */
static __always_inline void note_service(struct bpf_sock_ops *skops,
					 const struct bypass_service_key *svc,
					 __u32 flags)
{
	struct bpf_sock *sk = skops->sk;
	struct bypass_sock_state *st;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	st->netns = svc->netns;
	st->port = svc->port;
	st->flags = flags | BYPASS_SK_SERVICE;
}

/* select = "all": a connection end of an unproven service on the TCP path:
 * the state callback watches how it ends (note_half_close, check_half_close,
 * note_clean_close). */
static __always_inline void watch_on_tcp(struct bpf_sock_ops *skops,
					 const struct bypass_service_key *svc,
					 __u32 flags)
{
	note_service(skops, svc, flags | BYPASS_SK_ON_TCP);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void insert(struct bpf_sock_ops *skops,
				   struct bypass_key *key,
				   const struct bypass_service_key *svc)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	/* The index entry first: sockmsg may redirect to this socket as soon
	 * as it is in the sockhash, and reads its queue through the entry. */
	struct bypass_sock_info info = {
		.cookie = bpf_get_socket_cookie(skops),
		.since_ns = bpf_ktime_get_ns(),
		.sk = (__u64)sk,
	};
	if (bpf_map_update_elem(&sock_index, key, &info, BPF_ANY)) {
		COUNT(insert_failed);
		return;
	}
	long err = bpf_sock_hash_update(skops, &sock_hash, key, BPF_NOEXIST);
	if (err) {
		bpf_map_delete_elem(&sock_index, key);
		COUNT(insert_failed);
		return;
	}
	COUNT(inserted);
	/* auto: sockmsg samples the writes of accelerated sockets. Both
	 * modes: the service is recorded so a half-close can mark it. */
	__u32 server = skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB ? BYPASS_SK_SERVER : 0;
	if (cfg_select == BYPASS_SELECT_AUTO)
		new_state(skops, svc, BYPASS_SK_ACCEL | server);
	else
		note_service(skops, svc, server);
	/* The queue bound is a quarter of the receiver's sk_rcvbuf; without
	 * autotuning (no TCP receive path) it would stay at tcp_rmem[1]. */
	if (cfg_rcvbuf) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
		/* sk_userlocks is a bitfield on some kernels (6.1) and a
		 * byte on others (6.18): a direct load cannot be relocated
		 * for both, the CO-RE bitfield read (probe_read of the
		 * relocated bytes, shifted) can. */
		if (tp && !(BPF_CORE_READ_BITFIELD_PROBED(&tp->inet_conn.icsk_inet.sk,
							  sk_userlocks) & SOCK_RCVBUF_LOCK) &&
		    tp->inet_conn.icsk_inet.sk.sk_rcvbuf < (int)cfg_rcvbuf) {
			int v = cfg_rcvbuf / 2; /* the kernel doubles it */
			if (!bpf_setsockopt(skops, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)))
				COUNT(rcvbuf_raised);
		}
	}
	/* State changes: count FINs, drop the sock_index entry on close. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
}

#define RCV_SHUTDOWN 1

/* FIN_WAIT1 from shutdown(SHUT_WR): the receive side is still open, so the
 * application may read on (close() shuts both sides first). Remembered with
 * what was received so far; the service is marked when data arrives after
 * it: over TCP, seen here at close; redirected, by the peer's sk_msg
 * verdict. A writer that half-closes and never gets data back (an upload)
 * leaves its service alone. */
static __always_inline void note_half_close(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct bypass_sock_state *st;
	struct tcp_sock *tp;

	if (!sk)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	/* A byte on 6.18, a bitfield on older kernels: the CO-RE bitfield
	 * read relocates both. */
	if (BPF_CORE_READ_BITFIELD_PROBED(&tp->inet_conn.icsk_inet.sk, sk_shutdown) &
	    RCV_SHUTDOWN)
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || !(st->flags & BYPASS_SK_SERVICE))
		return;
	st->flags |= BYPASS_SK_HALF_CLOSED;
	st->rx_at_fin = (__u32)tp->bytes_received;
	/* The peer already sent to it (redirected or over TCP): a two-way
	 * connection that half-closes reads on. Marked now, before its reader
	 * can fail (a failed reader may stop reading and hide it). */
	struct bypass_key key, peer;
	if (BYPASS_FILL_KEY(&key, skops, bpf_get_netns_cookie(skops)))
		return;
	bypass_peer_key(&key, &peer);
	struct bypass_sock_info *pi = bpf_map_lookup_elem(&sock_index, &peer);
	if (((pi && pi->sent) || st->rx_at_fin > 1) && BYPASS_MARK_HALF_CLOSE(&services, st))
		COUNT(half_close_reads);
}

/* At close: did a half-closed end receive TCP data after its FIN? */
static __always_inline void check_half_close(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct bypass_sock_state *st;
	struct tcp_sock *tp;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || !(st->flags & BYPASS_SK_HALF_CLOSED))
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	/* bytes_received follows rcv_nxt, which the peer's FIN advances by
	 * one: more than that is data. */
	if (tp && (__u32)tp->bytes_received - st->rx_at_fin > 1 &&
	    BYPASS_MARK_HALF_CLOSE(&services, st))
		COUNT(half_close_reads);
}

/* At close, after check_half_close: a client end that exchanged data and
 * did not half-close and read on proves its service (both modes). Only the
 * client end: a server end that half-closes and reads on marks the service
 * at its FIN_WAIT1 (it has received the request by then), and the client's
 * close follows the server's FIN; a client's own half-close is decided by
 * this same callback just before. An end that only connected and closed
 * (a health check) says nothing about how the service's readers end. */
static __always_inline void note_clean_close(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct bypass_sock_state *st;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || (st->flags & (BYPASS_SK_SERVER | BYPASS_SK_HC_NOTED)) ||
	    !(st->flags & BYPASS_SK_SERVICE))
		return;
	/* bytes_received counts the peer's FIN as one, bytes_acked our SYN
	 * and FIN as one each: more is data. (An accelerated end moves no
	 * TCP bytes and is not counted: its service was proven already.) */
	if (skops->bytes_received <= 1 && skops->bytes_acked <= 2)
		return;
	struct bypass_service_key k = { .netns = st->netns, .port = st->port };
	struct bypass_service *svc = bypass_service_get(&services, &k);
	if (!svc)
		return;
	__sync_fetch_and_add(&svc->clean_closes, 1);
	COUNT(clean_closes);
}

static __always_inline void on_state(struct bpf_sock_ops *skops)
{
	struct bypass_key key;

	/* args[0]: old state, args[1]: new state */
	if (skops->args[1] == BPF_TCP_FIN_WAIT1 || skops->args[1] == BPF_TCP_LAST_ACK) {
		/* An accelerated socket sent its FIN (not one watched on TCP). */
		struct bpf_sock *hsk = skops->sk;
		struct bypass_sock_state *hs =
			hsk ? bpf_sk_storage_get(&sock_state, hsk, 0, 0) : 0;
		if (!hs || !(hs->flags & BYPASS_SK_ON_TCP))
			COUNT(half_closed);
	}
	if (skops->args[1] == BPF_TCP_FIN_WAIT1)
		note_half_close(skops);
	if (skops->args[1] != BPF_TCP_CLOSE)
		return;
	check_half_close(skops);
	note_clean_close(skops);
	/* The kernel drops the socket from the sockhash itself when it is
	 * closed; keep the index in step. */
	if (!BYPASS_FILL_KEY(&key, skops, bpf_get_netns_cookie(skops)))
		bpf_map_delete_elem(&sock_index, &key);
	/* A TCP-path connection that closed before its window filled. */
	struct bpf_sock *sk = skops->sk;
	if (cfg_select == BYPASS_SELECT_AUTO && sk) {
		struct bypass_sock_state *st =
			bpf_sk_storage_get(&sock_state, sk, 0, 0);
		if (st && (st->flags & BYPASS_SK_LEARNING) &&
		    !(st->flags & BYPASS_SK_ACCEL) &&
		    bypass_fold_sample(&services, st))
			COUNT(samples_tcp);
	}
}

SEC("sockops")
int bypass_sockops(struct bpf_sock_ops *skops)
{
	struct bypass_key key;
	struct bypass_service_key svc = {};
	__u32 op = skops->op;

	switch (op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		break;
	case BPF_SOCK_OPS_STATE_CB:
		on_state(skops);
		return 1;
	case BPF_SOCK_OPS_TSTAMP_SENDMSG_CB:
		learn_sendmsg(skops);
		return 1;
	case BPF_SOCK_OPS_RTT_CB:
		learn_close(skops);
		return 1;
	default:
		return 1;
	}

	if (BYPASS_FILL_KEY(&key, skops, bpf_get_netns_cookie(skops)))
		return 1;
	if (!both_local(&key)) {
		COUNT(skipped_not_local);
		return 1;
	}
	if (filtered_out(&key)) {
		COUNT(skipped_filtered);
		return 1;
	}
	int automatic = cfg_select == BYPASS_SELECT_AUTO;
	/* The service: the server end's port, within this netns. */
	svc.netns = key.netns;
	svc.port = op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ? key.remote_port
							     : key.local_port;
	/* The client end was established (and inserted) first: its ACK is
	 * what makes this end established. No client entry means a peer
	 * outside the cgroup, filtered, or kept on TCP by auto: nothing would
	 * ever be redirected to or from this socket, so keep it off the
	 * (costlier) sockmap path. */
	if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		struct bypass_key peer;
		bypass_peer_key(&key, &peer);
		if (!bpf_map_lookup_elem(&sock_index, &peer)) {
			if (automatic) {
				learn_on_tcp(skops, &svc);
			} else {
				COUNT(skipped_no_peer);
				watch_on_tcp(skops, &svc, BYPASS_SK_SERVER);
			}
			return 1;
		}
	} else if (!automatic) {
		if (!service_proven(&svc)) {
			watch_on_tcp(skops, &svc, 0);
			return 1;
		}
	} else {
		if (!service_accelerates(&svc)) {
			COUNT(auto_kept_tcp);
			learn_on_tcp(skops, &svc);
			return 1;
		}
		COUNT(auto_accelerated);
	}
	insert(skops, &key, &svc);
	return 1;
}
