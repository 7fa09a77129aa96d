// SPDX-License-Identifier: GPL-2.0
/* sockmsg: sk_msg verdict on the sockops sockhash. Each sendmsg() on an
 * accelerated socket is queued straight on the peer socket's receive side
 * (BPF_F_INGRESS), skipping TCP/IP and loopback. Design: docs/sockops.md. */
#include "bpfmgr/bpf_common.h"
#include "bypass_key.bpf.h"
#include "bypass_learn.bpf.h"

char LICENSE[] SEC("license") = "GPL";

BYPASS_SOCK_HASH_DEF;
/* Shared with sockops through the manifest when auto mode learns from
 * accelerated sockets; private (and then only holding tcp_path) if not. */
BYPASS_SERVICES_DEF;
BYPASS_SOCK_STATE_DEF;
BYPASS_SOCK_INDEX_DEF;

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

/* What the verdict reads of the peer. An sk_msg program has no trusted
 * pointer to the peer socket: a sockhash lookup returns a referenced socket
 * that sk_msg may not release (no bpf_sk_release for this program type, up
 * to 6.18), and the redirect target (sk_msg->sk_redir) is only reachable
 * through a kfunc cast and a struct walk, an untrusted pointer newer
 * verifiers refuse to hand to helpers. So sockops records each socket's
 * address in `sock_index` (keyed like the sockhash) and the verdict reads
 * three fields of the peer through it with bpf_probe_read_kernel. Never
 * handed to a helper; a stale read (the peer closing) only misjudges one
 * bound check, and then the redirect finds no peer and passes. */
struct peer_view {
	__u32 rmem;    /* sk_rmem_alloc: ingress bytes are charged here */
	__u32 rcvbuf;  /* sk_rcvbuf */
	__u32 rcvq;    /* packets in its TCP receive queue */
	__u32 sent;    /* auto: messages it sent (its sock_index.sent) */
	__u32 shut;    /* sk_shutdown: SEND_SHUTDOWN once it half-closed */
};

#define RCV_SHUTDOWN 1
#define SEND_SHUTDOWN 2

/* 1 when the manifest shares sockops' sock_index with this instance (set
 * by the plugin before load). Without it the peer's queue cannot be read:
 * every message takes the TCP path (status says why). */
const volatile __u32 cfg_have_index = 0;

static __always_inline int read_peer(struct bypass_key *peer_key,
				     struct peer_view *v)
{
	struct bypass_sock_info *info = bpf_map_lookup_elem(&sock_index, peer_key);
	if (!info || !info->sk)
		return -1;
	struct sock *peer = (struct sock *)info->sk;
	v->rmem = (__u32)BPF_CORE_READ(peer, sk_backlog.rmem_alloc.counter);
	v->rcvbuf = (__u32)BPF_CORE_READ(peer, sk_rcvbuf);
	v->rcvq = BPF_CORE_READ(peer, sk_receive_queue.qlen);
	/* A bitfield on some kernels: the CO-RE bitfield read relocates. */
	v->shut = BPF_CORE_READ_BITFIELD_PROBED(peer, sk_shutdown);
	v->sent = info->sent;
	return 0;
}

/* Learning window of an accelerated socket (auto mode): message sizes, and
 * whether each message answers the peer: the peer sent since our previous
 * message and had read everything we sent (its queue was empty). */
static __always_inline void learn(struct sk_msg_md *msg,
				  struct bypass_sock_state *st, __u32 size,
				  const struct peer_view *pv,
				  struct sockmsg_counters *c)
{
	__u32 peer_sent = pv->sent;
	/* An answer: the peer sent since our previous message, read all we
	 * sent (its queue is empty), and we read all it sent. */
	if (st->msgs && peer_sent != st->last_rx && pv->rmem == 0) {
		struct bpf_sock *sk = msg->sk;
		struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : 0;
		if (tp && tp->inet_conn.icsk_inet.sk.sk_backlog.rmem_alloc.counter == 0)
			st->turns++;
	}
	st->last_rx = peer_sent;
	st->bytes += size;
	if (++st->msgs >= BYPASS_WINDOW_MSGS && bypass_fold_sample(&services, st) && c)
		c->samples_accel++;
}

/* Whether this message opens or continues a learning window; counts it in
 * our `sent`, which the peer reads. */
static __always_inline int learning_now(struct bypass_sock_state *st,
					struct bypass_key *key)
{
	if (!st || !(st->flags & BYPASS_SK_ACCEL))
		return 0;
	st->sent++;
	struct bypass_sock_info *own = bpf_map_lookup_elem(&sock_index, key);
	if (own)
		own->sent = st->sent;
	if (!(st->flags & BYPASS_SK_LEARNING)) {
		/* Long-lived sockets are sampled again now and then. */
		if (--st->next_window)
			return 0;
		st->flags |= BYPASS_SK_LEARNING;
		st->next_window = BYPASS_REWINDOW_MSGS;
		st->msgs = 0;
	}
	return 1;
}

/* The queue bound. A redirect never blocks the writer (the kernel charges
 * the bytes to the peer's sk_rmem_alloc but checks no sk_rcvbuf), so a peer
 * that reads slower than we write, or not at all, would let us pin
 * unbounded memory. Before each redirect the verdict reads the peer's
 * queue; when this message would take it past a quarter of the peer's
 * sk_rcvbuf the message takes the TCP path instead, whose window and our
 * SO_SNDBUF block the writer. A quarter: TCP advertises a zero window once
 * its free space drops below half of the buffer's window space, and must
 * not start from a zero window (it is never reopened by reading the
 * ingress list: the stall docs/sockops.md records). */
#define OVERFLOW_STRIKE_NS (100ull * 1000 * 1000)
#define BOUND_MIN_RCVBUF (256u << 10)

static __always_inline int over_bound(const struct peer_view *pv, __u32 size)
{
	/* Exempt: a receive buffer the application made small. Each message
	 * would cross the bound, and a receiver that got ingress bytes and
	 * then TCP bytes with such a buffer stalled here (an edge-triggered
	 * non-blocking reader never saw the TCP bytes; docs/sockops.md). */
	if (pv->rcvbuf < BOUND_MIN_RCVBUF)
		return 0;
	return pv->rmem + size > pv->rcvbuf / 4;
}

/* Back from TCP to redirects only when that cannot reorder: every byte we
 * sent on TCP was acknowledged (so it sits in the peer's receive queue or
 * was read) and the peer's receive queue is empty (so it was read: the
 * reader copies under the socket lock a redirect needs too). And the
 * ingress queue went down to an eighth of the buffer. */
static __always_inline int tcp_drained(struct sk_msg_md *msg,
				       const struct peer_view *pv)
{
	struct bpf_sock *sk = msg->sk;
	struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : 0;

	if (!tp)
		return 0;
	if (tp->snd_una != tp->write_seq)
		return 0;
	if (pv->rcvq)
		return 0;
	return pv->rmem <= pv->rcvbuf / 8;
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
	struct peer_view pv = {};
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
	if (ctl && ctl->draining) {
		if (c)
			c->passed_draining++;
		goto pass; /* permanent: nothing can switch back */
	}
	if (BYPASS_FILL_KEY(&key, msg, bpf_get_netns_cookie(msg)))
		goto pass_sticky;
	bypass_peer_key(&key, &peer);
	if (!cfg_have_index) {
		if (c)
			c->passed_no_index++;
		goto pass;
	}
	if (read_peer(&peer, &pv)) {
		if (c)
			c->redirect_failed++;
		goto pass_sticky; /* no peer: the redirect could not happen */
	}
	if (st && st->overflow) {
		if (st->resumes >= RESUME_MAX) {
			st->tcp_path = 1; /* for good */
			if (c)
				c->passed_overflow++;
			goto pass;
		}
		if (!tcp_drained(msg, &pv)) {
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
	if (over_bound(&pv, size)) {
		if (!st && sk)
			st = bpf_sk_storage_get(&sock_state, sk, 0,
						BPF_SK_STORAGE_GET_F_CREATE);
		if (!st)
			goto pass_sticky; /* cannot remember the overflow */
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
	/* The peer half-closed and still reads: a blocking reader there can
	 * be told EAGAIN by the kernel (docs/sockops.md, "Blocking readers").
	 * This connection goes on; its service is not accelerated again. */
	if ((pv.shut & SEND_SHUTDOWN) && !(pv.shut & RCV_SHUTDOWN) && st &&
	    BYPASS_MARK_HALF_CLOSE(&services, st) && c)
		c->sent_after_half_close++;
	/* SK_PASS when the peer is in the map; otherwise the helper returns
	 * SK_DROP, which would fail the sendmsg(): take the TCP path instead. */
	if (bpf_msg_redirect_hash(msg, &sock_hash, &peer, BPF_F_INGRESS) ==
	    SK_PASS) {
		if (c) {
			c->redirected_msgs++;
			c->redirected_bytes += size;
		}
		if (learning_now(st, &key))
			learn(msg, st, size, &pv, c);
		/* Once: the peer's sockops tells from this whether a
		 * half-close of it will be followed by reads. */
		if (st && !(st->flags & BYPASS_SK_SENT_NOTED)) {
			struct bypass_sock_info *own = bpf_map_lookup_elem(&sock_index, &key);
			if (own && !own->sent)
				own->sent = 1;
			st->flags |= BYPASS_SK_SENT_NOTED;
		}
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
