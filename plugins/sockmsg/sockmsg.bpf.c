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

SEC("sk_msg")
int bypass_sk_msg(struct sk_msg_md *msg)
{
	struct bypass_key key, peer;
	__u32 zero = 0;
	struct sockmsg_counters *c = bpf_map_lookup_elem(&sockmsg_counters, &zero);
	struct sockmsg_ctl *ctl = bpf_map_lookup_elem(&sockmsg_ctl, &zero);
	__u32 size = msg->size;

	if (ctl && ctl->draining) {
		if (c)
			c->passed_draining++;
		goto pass;
	}
	if (BYPASS_FILL_KEY(&key, msg, bpf_get_netns_cookie(msg)))
		goto pass;
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
pass:
	if (c) {
		c->passed_msgs++;
		c->passed_bytes += size;
	}
	return SK_PASS;
}
