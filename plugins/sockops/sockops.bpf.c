// SPDX-License-Identifier: GPL-2.0
/* sockops: records established same-host TCP sockets in a sockhash so that
 * the sockmsg plugin can hand each sendmsg() straight to the peer socket.
 * Design notes: docs/sockops.md. */
#include "bpfmgr/bpf_common.h"
#include "bypass_key.bpf.h"

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

BYPASS_SOCK_HASH_DEF;

/* Mirror of the sockhash with BTF (see bypass_common.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BYPASS_MAX_SOCKETS);
	__type(key, struct bypass_key);
	__type(value, struct bypass_sock_info);
} sock_index SEC(".maps");

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

static __always_inline void insert(struct bpf_sock_ops *skops,
				   struct bypass_key *key)
{
	long err = bpf_sock_hash_update(skops, &sock_hash, key, BPF_NOEXIST);
	if (err) {
		COUNT(insert_failed);
		return;
	}
	COUNT(inserted);
	struct bypass_sock_info info = {
		.cookie = bpf_get_socket_cookie(skops),
		.since_ns = bpf_ktime_get_ns(),
	};
	bpf_map_update_elem(&sock_index, key, &info, BPF_ANY);
	/* State changes: count FINs, drop the sock_index entry on close. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
}

SEC("sockops")
int bypass_sockops(struct bpf_sock_ops *skops)
{
	struct bypass_key key;
	__u32 op = skops->op;

	switch (op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* args[0]: old state, args[1]: new state */
		if (skops->args[1] == BPF_TCP_FIN_WAIT1 ||
		    skops->args[1] == BPF_TCP_LAST_ACK)
			COUNT(half_closed); /* this socket sent its FIN */
		/* The kernel drops the socket from the sockhash itself when it
		 * is closed; keep the index in step. */
		if (skops->args[1] == BPF_TCP_CLOSE &&
		    !BYPASS_FILL_KEY(&key, skops, bpf_get_netns_cookie(skops)))
			bpf_map_delete_elem(&sock_index, &key);
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
	/* The client end was established (and inserted) first: its ACK is
	 * what makes this end established. No client entry means a peer
	 * outside the cgroup or filtered: nothing would ever be redirected
	 * to or from this socket, so keep it off the (costlier) sockmap path. */
	if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		struct bypass_key peer;
		bypass_peer_key(&key, &peer);
		if (!bpf_map_lookup_elem(&sock_index, &peer)) {
			COUNT(skipped_no_peer);
			return 1;
		}
	}
	insert(skops, &key);
	return 1;
}
