// SPDX-License-Identifier: GPL-2.0
/* sockmsg: sk_msg verdict on the sockops sockhash. Each sendmsg() on an
 * accelerated socket is queued straight on the peer socket's receive side
 * (BPF_F_INGRESS), skipping TCP/IP and loopback. Design: docs/sockops.md. */
#include "bpfmgr/bpf_common.h"
#include "bypass_key.bpf.h"
#include "bypass_learn.bpf.h"

char LICENSE[] SEC("license") = "GPL";

extern void *bpf_cast_to_kern_ctx(void *) __ksym;

BYPASS_SOCK_HASH_DEF;
/* Shared with sockops through the manifest when auto mode learns from
 * accelerated sockets; private (and then only holding tcp_path) if not. */
BYPASS_SERVICES_DEF;
BYPASS_SOCK_STATE_DEF;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sockmsg_counters);
} sockmsg_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sockmsg_ctl);
} sockmsg_ctl SEC(".maps");

/* Once a socket's bytes went over TCP they may still sit unread in the
 * peer's receive queue; a later redirect would be read before them (the
 * peer reads its ingress list first). So the TCP path is one-way. This
 * happens when the client writes before the server end is established and
 * in the map (a short race on connect), after draining starts, and when
 * the queue bound moves a socket to TCP. */
static __always_inline void stick_to_tcp(struct sk_msg_md *msg,
					 struct bypass_sock_state *st)
{
	struct bpf_sock *sk = msg->sk;

	if (!st && sk)
		st = bpf_sk_storage_get(&sock_state, sk, 0,
					BPF_SK_STORAGE_GET_F_CREATE);
	if (st)
		st->tcp_path = 1;
}

/* Learning window of an accelerated socket (auto mode): message sizes, and
 * whether each message answers the peer: the peer sent since our previous
 * message and had read everything we sent (its queue was empty). */
static __always_inline void learn(struct sk_msg_md *msg,
				  struct bypass_sock_state *st,
				  __u32 size,
				  __u32 peer_queued, struct sockmsg_counters *c)
{
	st->sent++;
	if (!(st->flags & BYPASS_SK_LEARNING)) {
		/* Long-lived sockets are sampled again now and then. */
		if (--st->next_window)
			return;
		st->flags |= BYPASS_SK_LEARNING;
		st->next_window = BYPASS_REWINDOW_MSGS;
		st->msgs = 0;
	}
	__u32 peer_sent = st->last_rx;
	struct sk_msg *kmsg = bpf_cast_to_kern_ctx(msg);
	struct sock *psk = kmsg->sk_redir;
	if (psk) {
		struct bypass_sock_state *pst =
			bpf_sk_storage_get(&sock_state, psk, 0, 0);
		if (pst)
			peer_sent = pst->sent;
	}
	/* An answer: the peer sent since our previous message, read all we
	 * sent (its queue is empty), and we read all it sent. */
	struct sock *own = kmsg->sk;
	if (st->msgs && peer_sent != st->last_rx && peer_queued == 0 && own &&
	    own->sk_backlog.rmem_alloc.counter == 0)
		st->turns++;
	st->last_rx = peer_sent;
	st->bytes += size;
	if (++st->msgs >= BYPASS_WINDOW_MSGS && bypass_fold_sample(&services, st) && c)
		c->samples_accel++;
}

/* The queue bound. A redirect never blocks the writer (the kernel charges
 * the bytes to the peer's sk_rmem_alloc but checks no sk_rcvbuf), so a peer
 * that reads slower than we write, or not at all, would let us pin
 * unbounded memory. Before each redirect the peer's queue is read (through
 * the peer's address recorded at the previous redirect, with
 * bpf_probe_read_kernel: a peer that went away reads as anything, and then
 * the redirect finds no peer and passes, or we pass: both keep order). When
 * it would pass a quarter of the peer's sk_rcvbuf the message takes the TCP
 * path instead, whose window and our SO_SNDBUF block the writer; TCP keeps
 * window room (a zero window is never reopened by reading the ingress list:
 * the stall docs/sockops.md records). */
#define OVERFLOW_STRIKE_NS (100ull * 1000 * 1000)
#define BOUND_MIN_RCVBUF (256u << 10)

/* The peer's queue (ingress bytes are charged to its sk_rmem_alloc) would
 * pass a quarter of its sk_rcvbuf with this message. A quarter: TCP
 * advertises a zero window once its free space drops below half of the
 * buffer's window space, and must not start from a zero window. */
static __always_inline int over_bound(const struct bypass_sock_state *st, __u32 size)
{
	struct sock *peer = (struct sock *)st->peer_sk;
	__u32 rmem = (__u32)BPF_CORE_READ(peer, sk_backlog.rmem_alloc.counter);
	__u32 rcvbuf = (__u32)BPF_CORE_READ(peer, sk_rcvbuf);
	/* Exempt: a receive buffer the application made small. Each message
	 * would cross the bound, and a receiver that got ingress bytes and
	 * then TCP bytes with such a buffer stalled here (an edge-triggered
	 * non-blocking reader never saw the TCP bytes; docs/sockops.md). */
	if (rcvbuf < BOUND_MIN_RCVBUF)
		return 0;
	return rmem + size > rcvbuf / 4;
}

/* Back from TCP to redirects only when that cannot reorder: every byte we
 * sent on TCP was acknowledged (so it sits in the peer's receive queue or
 * was read) and the peer's receive queue is empty (so it was read: the
 * reader copies under the socket lock a redirect needs too). And the
 * ingress queue went down to a quarter of the buffer. The peer's address
 * was recorded at the redirect that crossed the bound; it is only read
 * through bpf_probe_read_kernel, and if the peer went away the redirect
 * that follows finds no peer in the sockhash and passes. */
static __always_inline int tcp_drained(struct sk_msg_md *msg,
				       const struct bypass_sock_state *st)
{
	struct sk_msg *kmsg = bpf_cast_to_kern_ctx(msg);
	struct tcp_sock *tp = (struct tcp_sock *)kmsg->sk;
	struct sock *peer = (struct sock *)st->peer_sk;

	if (!tp || !peer)
		return 0;
	if (BPF_CORE_READ(tp, snd_una) != BPF_CORE_READ(tp, write_seq))
		return 0;
	if (BPF_CORE_READ(peer, sk_receive_queue.qlen))
		return 0;
	__u32 rmem = (__u32)BPF_CORE_READ(peer, sk_backlog.rmem_alloc.counter);
	__u32 rcvbuf = (__u32)BPF_CORE_READ(peer, sk_rcvbuf);
	return rmem <= rcvbuf / 8;
}

/* A socket that overflowed this often stays on TCP: each switch mixes the
 * two receive paths on the peer. */
#define RESUME_MAX 64

static __always_inline void strike_service(struct bypass_sock_state *st)
{
	struct bypass_service_key key = { .netns = st->netns, .port = st->port };
	struct bypass_service *svc;

	if (!(st->flags & BYPASS_SK_SERVICE))
		return;
	svc = bpf_map_lookup_elem(&services, &key);
	if (svc)
		svc->queue_strikes = 8;
}

SEC("sk_msg")
int bypass_sk_msg(struct sk_msg_md *msg)
{
	struct bypass_key key, peer;
	__u32 zero = 0;
	struct sockmsg_counters *c = bpf_map_lookup_elem(&sockmsg_counters, &zero);
	struct sockmsg_ctl *ctl = bpf_map_lookup_elem(&sockmsg_ctl, &zero);
	struct bypass_sock_state *st = 0;
	__u32 size = msg->size;

	struct bpf_sock *sk = msg->sk;
	if (sk) {
		st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
		if (st && st->tcp_path) {
			if (c)
				c->passed_sticky++;
			goto pass;
		}
	}
	if (st && st->overflow) {
		if (st->resumes >= RESUME_MAX) {
			st->tcp_path = 1; /* for good */
			if (c)
				c->passed_overflow++;
			goto pass;
		}
		if (!tcp_drained(msg, st)) {
			if (c)
				c->passed_overflow++;
			/* A peer that stays behind for long: its service stops
			 * being accelerated (auto), until samples decay it. */
			if (!(st->flags & BYPASS_SK_STRUCK) &&
			    bpf_ktime_get_ns() - st->overflow_ns > OVERFLOW_STRIKE_NS) {
				st->flags |= BYPASS_SK_STRUCK;
				strike_service(st);
			}
			goto pass;
		}
		st->overflow = 0;
		st->resumes++;
		if (c)
			c->queue_resumed++;
	}
	if (ctl && ctl->draining) {
		if (c)
			c->passed_draining++;
		goto pass; /* permanent: nothing can switch back */
	}
	if (st && st->peer_sk && over_bound(st, size)) {
		st->overflow = 1;
		st->overflow_ns = bpf_ktime_get_ns();
		st->flags &= ~BYPASS_SK_STRUCK;
		if (c) {
			c->queue_bound++;
			c->passed_overflow++;
		}
		if (st->flags & BYPASS_SK_SERVICE) {
			struct bypass_service_key skey = { .netns = st->netns,
							   .port = st->port };
			struct bypass_service *svc = bpf_map_lookup_elem(&services, &skey);
			if (svc)
				__sync_fetch_and_add(&svc->queue_bound_hits, 1);
		}
		goto pass;
	}
	if (BYPASS_FILL_KEY(&key, msg, bpf_get_netns_cookie(msg)))
		goto pass_sticky;
	bypass_peer_key(&key, &peer);
	/* SK_PASS when the peer is in the map; otherwise the helper returns
	 * SK_DROP, which would fail the sendmsg(): take the TCP path instead. */
	if (bpf_msg_redirect_hash(msg, &sock_hash, &peer, BPF_F_INGRESS) ==
	    SK_PASS) {
		__u32 queued = 0;
		if (c) {
			c->redirected_msgs++;
			c->redirected_bytes += size;
		}
		/* Remember the peer for the next message's bound check. */
		struct sk_msg *kmsg = bpf_cast_to_kern_ctx(msg);
		if (!st && sk)
			st = bpf_sk_storage_get(&sock_state, sk, 0,
						BPF_SK_STORAGE_GET_F_CREATE);
		if (st)
			st->peer_sk = (__u64)kmsg->sk_redir;
		queued = st ? 0 : 1;
		if (st && kmsg->sk_redir)
			queued = (__u32)kmsg->sk_redir->sk_backlog.rmem_alloc.counter;
		if (st && (st->flags & BYPASS_SK_ACCEL))
			learn(msg, st, size, queued, c);
		return SK_PASS;
	}
	if (c)
		c->redirect_failed++;
pass_sticky:
	stick_to_tcp(msg, st);
pass:
	if (c) {
		c->passed_msgs++;
		c->passed_bytes += size;
	}
	return SK_PASS;
}
