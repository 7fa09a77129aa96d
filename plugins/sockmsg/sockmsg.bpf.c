// SPDX-License-Identifier: GPL-2.0
/* sockmsg: sk_msg verdict on the sockops sockhash. Each sendmsg() on an
 * accelerated socket is queued straight on the peer socket's receive side
 * (BPF_F_INGRESS), skipping TCP/IP and loopback. Design: docs/sockops.md. */
#include "bpfmgr/bpf_common.h"
#include "bypass_key.bpf.h"

char LICENSE[] SEC("license") = "GPL";

BYPASS_SOCK_HASH_DEF;

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

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sockmsg_sk_state);
} sockmsg_sk_state SEC(".maps");

/* Once a socket's bytes went over TCP they may still sit unread in the
 * peer's receive queue; a later redirect would be read before them (the
 * peer reads its ingress list first). So the TCP path is one-way. This
 * happens when the client writes before the server end is established and
 * in the map (a short race on connect) and after draining starts. */
static __always_inline void stick_to_tcp(struct sk_msg_md *msg)
{
	struct sockmsg_sk_state *st;
	struct bpf_sock *sk = msg->sk;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sockmsg_sk_state, sk, 0,
				BPF_SK_STORAGE_GET_F_CREATE);
	if (st)
		st->tcp_path = 1;
}

SEC("sk_msg")
int bypass_sk_msg(struct sk_msg_md *msg)
{
	struct bypass_key key, peer;
	__u32 zero = 0;
	struct sockmsg_counters *c = bpf_map_lookup_elem(&sockmsg_counters, &zero);
	struct sockmsg_ctl *ctl = bpf_map_lookup_elem(&sockmsg_ctl, &zero);
	__u32 size = msg->size;

	struct bpf_sock *sk = msg->sk;
	if (sk) {
		struct sockmsg_sk_state *st =
			bpf_sk_storage_get(&sockmsg_sk_state, sk, 0, 0);
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
	/* SK_PASS when the peer is in the map; otherwise the helper returns
	 * SK_DROP, which would fail the sendmsg(): take the TCP path instead. */
	if (bpf_msg_redirect_hash(msg, &sock_hash, &peer, BPF_F_INGRESS) ==
	    SK_PASS) {
		if (c) {
			c->redirected_msgs++;
			c->redirected_bytes += size;
		}
		return SK_PASS;
	}
	if (c)
		c->redirect_failed++;
pass_sticky:
	stick_to_tcp(msg);
pass:
	if (c) {
		c->passed_msgs++;
		c->passed_bytes += size;
	}
	return SK_PASS;
}
