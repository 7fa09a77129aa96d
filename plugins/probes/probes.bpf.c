// SPDX-License-Identifier: GPL-2.0
/* probes: connection probes, network events and syscall tracers.
 *
 * Hooks (no kprobes, no fentry on this kernel; see docs/probes.md):
 *   tracepoint/sock/inet_sock_set_state   connect, close, connect failed,
 *                                          server-side establishment
 *   tracepoint/syscalls/sys_exit_accept4  accept (process context: the
 *   tracepoint/syscalls/sys_exit_accept   accepting process), fd -> sock
 *   tracepoint/tcp/tcp_retransmit_skb     retransmits
 *   tracepoint/tcp/tcp_send_reset         resets sent
 *   tracepoint/tcp/tcp_receive_reset      resets received
 *   tracepoint/skb/kfree_skb              drops with reason
 *   raw_tp/sock_rcvqueue_full             receive queue full (raw: the
 *                                          classic one has no socket)
 *   raw_tp/sys_enter + raw_tp/sys_exit    the ten read/write syscalls, one
 *                                          program each, filtered by nr
 *
 * Programs that read memory reached through untyped pointers (the fd table,
 * the saved registers) come in two variants (compat.bpf.h, "Direct
 * loads"): `<name>` with direct loads (kfunc bpf_rdonly_cast, 6.2+) and
 * `<name>_copy` with bpf_probe_read_kernel (6.1); the plugin loads one.
 */
#include <bpfmgr/bpf_common.h>
#include <bpfmgr/compat.bpf.h>
#include <bpfmgr/counters.bpf.h>
#include <bpfmgr/kfuncs.h>
#include <bpfmgr/socket.h>
#include <bpfmgr/syscalls.h>

#include "probes.h"
#include "probes_ring.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* ------------------------------------------------------------ options
 * Set by the plugin before load (const volatile: the verifier prunes what
 * an instance does not use, so off filters cost nothing). */
const volatile __u32 kinds = 0xffffffff;        /* enum probes_kind_bit */
const volatile __u32 traced_ops = 0x3ff;        /* bit per enum probes_op */
const volatile __u8 sockets_only = 1;
const volatile __u8 syscall_events = 0;         /* one record per call */
const volatile __u8 family_mask = 3;            /* 1: ipv4, 2: ipv6 */
const volatile __u8 filter_pids = 0;            /* filter_pid map in use */
const volatile __u8 filter_ports = 0;           /* port_bitmap in use */
const volatile __u32 n_comms = 0;
const volatile __u64 comms[PROBES_MAX_COMMS][2] = {}; /* zero-padded comm */
const volatile __u32 n_cgroups = 0;
const volatile __u64 cgroup_ids[PROBES_MAX_CGROUPS] = {};
const volatile __u32 cgroup_levels[PROBES_MAX_CGROUPS] = {};
const volatile __u8 port_bitmap[8192] = {};     /* bit per port, host order */

/* --------------------------------------------------------------- maps
 * events (ring buffer) and counters: probes_ring.bpf.h. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* option max_connections */
	__type(key, struct probes_conn_key);
	__type(value, struct probes_conn);
} conns SEC(".maps");

/* Syscall aggregates: an open-addressed table in a per-CPU array. Slot =
 * hash(key) & mask, probing PROBES_SYS_PROBE slots; the key lives in the
 * slot. No helper call and no hashing call on the hot path, no atomics
 * (per CPU). A key may sit in different slots on different CPUs: readers
 * sum every slot of every CPU by key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096); /* option max_syscall_stats (power of two) */
	__type(key, __u32);
	__type(value, struct probes_sys_slot);
} syscall_stats SEC(".maps");

const volatile __u32 sys_slots_mask = 4095;

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct probes_inflight);
} inflight SEC(".maps");

struct filter_pid_key {
	__u32 tgid;
};
struct filter_pid_val {
	__u8 on;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized to the pids option */
	__type(key, struct filter_pid_key);
	__type(value, struct filter_pid_val);
} filter_pid SEC(".maps");

/* ------------------------------------------------------------ helpers */

/* Family filter: v4-mapped IPv6 is IPv4 on the wire and counts as ipv4. */
static __always_inline bool family_pass(__u16 family, const __u8 *addr6)
{
	if (family_mask == 3)
		return true;
	if (family == AF_INET)
		return family_mask & 1;
	if (family == AF_INET6)
		return family_mask & (bpfmgr_is_v4_mapped(addr6) ? 1 : 2);
	return false;
}

static __always_inline bool port_set(__u16 port)
{
	/* The compiler knows a __u16 is below 65536 and drops the mask, but
	 * a port that went through bpf_ntohs() is unbounded to verifiers
	 * that do not track byte swaps (6.1): hide the range from the
	 * compiler so the mask is emitted and every verifier sees it. */
	__u32 p = port;
	barrier_var(p);
	__u32 i = (p >> 3) & 8191;
	return (port_bitmap[i] >> (p & 7)) & 1;
}

static __always_inline bool ports_pass(__u16 sport, __u16 dport)
{
	if (!filter_ports)
		return true;
	return port_set(sport) || port_set(dport);
}

/* pid, cgroup and comm filters: the current task (process context). */
static __always_inline bool proc_pass(__u64 pid_tgid)
{
	if (filter_pids) {
		struct filter_pid_key k = { .tgid = pid_tgid >> 32 };
		if (!bpf_map_lookup_elem(&filter_pid, &k))
			return false;
	}
	if (n_cgroups) {
		bool hit = false;
		for (__u32 i = 0; i < PROBES_MAX_CGROUPS; i++) {
			if (i >= n_cgroups)
				break;
			if (bpf_get_current_ancestor_cgroup_id(cgroup_levels[i]) ==
			    cgroup_ids[i]) {
				hit = true;
				break;
			}
		}
		if (!hit)
			return false;
	}
	if (n_comms) {
		__u64 c[2] = {};
		bpf_get_current_comm(c, sizeof(c));
		bool hit = false;
		for (__u32 i = 0; i < PROBES_MAX_COMMS; i++) {
			if (i >= n_comms)
				break;
			if (c[0] == comms[i][0] && c[1] == comms[i][1]) {
				hit = true;
				break;
			}
		}
		if (!hit)
			return false;
	}
	return true;
}

static __always_inline bool proc_filters_on(void)
{
	return filter_pids || n_cgroups || n_comms;
}

/* The owner of a connection event that happens outside process context
 * (softirq, timers): the connection table knows it. With process filters on,
 * events whose owner is unknown or filtered out are not reported. */
static __always_inline bool fill_owner(struct probes_event *e, __u64 skaddr)
{
	struct probes_conn_key k = { .skaddr = skaddr };
	struct probes_conn *c = skaddr ? bpf_map_lookup_elem(&conns, &k) : NULL;
	if (c && c->owned) {
		e->pid = c->pid;
		e->tid = c->tid;
		e->cgroup_id = c->cgroup_id;
		e->sock_ino = c->sock_ino;
		e->role = c->role;
		__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
		return true;
	}
	return !proc_filters_on();
}

/* Owner check before reserving a record (so filtered events cost no ring
 * buffer space). */
static __always_inline bool owner_pass(__u64 skaddr)
{
	if (!proc_filters_on())
		return true;
	struct probes_conn_key k = { .skaddr = skaddr };
	struct probes_conn *c = skaddr ? bpf_map_lookup_elem(&conns, &k) : NULL;
	return c && c->owned;
}

static __always_inline void set_owner_current(__u32 *pid, __u32 *tid,
					      char *comm, __u64 *cgroup)
{
	__u64 id = bpf_get_current_pid_tgid();
	*pid = id >> 32;
	*tid = (__u32)id;
	bpf_get_current_comm(comm, PROBES_COMM_LEN);
	*cgroup = bpf_get_current_cgroup_id();
}

static __always_inline void tuple_from_tp(struct probes_tuple *t, __u16 family,
					  const __u8 *s4, const __u8 *d4,
					  const __u8 *s6, const __u8 *d6,
					  __u16 sport, __u16 dport)
{
	t->family = family;
	t->proto = IPPROTO_TCP;
	t->sport = sport;
	t->dport = dport;
	/* Through a helper: the verifier refuses loads from a ctx pointer
	 * whose offset the compiler chose at run time. */
	if (family == AF_INET) {
		bpf_probe_read_kernel(t->saddr, 4, s4);
		bpf_probe_read_kernel(t->daddr, 4, d4);
	} else {
		bpf_probe_read_kernel(t->saddr, 16, s6);
		bpf_probe_read_kernel(t->daddr, 16, d6);
	}
}

/* Tuple of a socket, read through CO-RE (local = source). */
static __always_inline void tuple_from_sk(struct probes_tuple *t, struct sock *sk)
{
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->proto = BPF_CORE_READ(sk, sk_protocol);
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (t->family == AF_INET) {
		BPF_CORE_READ_INTO(t->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(t->daddr, sk, __sk_common.skc_daddr);
	} else if (t->family == AF_INET6) {
		BPF_CORE_READ_INTO(t->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(t->daddr, sk, __sk_common.skc_v6_daddr);
	}
}

static __always_inline bool tuple_pass(const struct probes_tuple *t)
{
	return family_pass(t->family, t->saddr) && ports_pass(t->sport, t->dport);
}

static __always_inline __u64 sock_ino_of(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
}

/* ---------------------------------------------- connection lifecycle */

SEC("tracepoint/sock/inet_sock_set_state")
int probes_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	struct probes_conn_key key = { .skaddr = (__u64)ctx->skaddr };
	struct probes_conn *c;
	__u64 now = bpf_ktime_get_ns();

	if (newstate == TCP_SYN_SENT) {
		/* connect(): process context, the owner is current. The
		 * source port may not be chosen yet: ports are checked at
		 * ESTABLISHED. */
		if (family_mask != 3) {
			__u8 d6[16];
			bpf_probe_read_kernel(d6, sizeof(d6), ctx->daddr_v6);
			if (!family_pass(ctx->family, d6))
				return 0;
		}
		if (!proc_pass(bpf_get_current_pid_tgid()))
			return 0;
		struct probes_conn n = {};
		n.start_ns = now;
		n.role = PROBES_ROLE_CLIENT;
		n.owned = 1;
		set_owner_current(&n.pid, &n.tid, n.comm, &n.cgroup_id);
		n.sock_ino = sock_ino_of((struct sock *)ctx->skaddr);
		if (bpf_map_update_elem(&conns, &key, &n, BPF_ANY))
			COUNT(conns_full);
		return 0;
	}

	if (newstate == TCP_ESTABLISHED) {
		struct probes_tuple t = {};
		tuple_from_tp(&t, ctx->family, ctx->saddr, ctx->daddr,
			      ctx->saddr_v6, ctx->daddr_v6, ctx->sport, ctx->dport);
		if (oldstate == TCP_SYN_SENT) {
			c = bpf_map_lookup_elem(&conns, &key);
			if (!c)
				return 0;
			if (!ports_pass(t.sport, t.dport)) {
				bpf_map_delete_elem(&conns, &key);
				return 0;
			}
			c->established_ns = now;
			c->t = t;
			if (!(kinds & PROBES_K_CONNECT))
				return 0;
			struct probes_event *e = ev_reserve(PROBES_EV_CONNECT);
			if (!e)
				return 0;
			e->pid = c->pid;
			e->tid = c->tid;
			e->cgroup_id = c->cgroup_id;
			e->sock_ino = c->sock_ino;
			__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
			e->t = t;
			e->role = PROBES_ROLE_CLIENT;
			e->state = TCP_ESTABLISHED;
			e->duration_ns = now - c->start_ns;
			ev_submit(e);
			return 0;
		}
		if (oldstate == TCP_SYN_RECV) {
			/* Passive open, softirq (or the peer's) context: the
			 * owner is whoever accept()s it; see probes_accept. */
			if (!tuple_pass(&t))
				return 0;
			struct probes_conn n = {};
			n.start_ns = now;
			n.established_ns = now;
			n.role = PROBES_ROLE_SERVER;
			n.t = t;
			if (bpf_map_update_elem(&conns, &key, &n, BPF_ANY))
				COUNT(conns_full);
		}
		return 0;
	}

	c = bpf_map_lookup_elem(&conns, &key);
	if (!c)
		return 0;

	if (newstate != TCP_CLOSE) {
		if (c->closer == PROBES_CLOSER_UNKNOWN) {
			if (oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1)
				c->closer = PROBES_CLOSER_LOCAL;
			else if (oldstate == TCP_ESTABLISHED &&
				 newstate == TCP_CLOSE_WAIT)
				c->closer = PROBES_CLOSER_REMOTE;
		} else if (c->closer == PROBES_CLOSER_LOCAL &&
			   newstate == TCP_CLOSING) {
			c->closer = PROBES_CLOSER_BOTH;
		}
		return 0;
	}

	/* TCP_CLOSE: the end of this socket. */
	if (oldstate == TCP_SYN_SENT) {
		if ((kinds & PROBES_K_CONNECT) && c->owned) {
			struct probes_event *e = ev_reserve(PROBES_EV_CONNECT_FAILED);
			if (e) {
				e->pid = c->pid;
				e->tid = c->tid;
				e->cgroup_id = c->cgroup_id;
				e->sock_ino = c->sock_ino;
				__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
				tuple_from_tp(&e->t, ctx->family, ctx->saddr,
					      ctx->daddr, ctx->saddr_v6,
					      ctx->daddr_v6, ctx->sport,
					      ctx->dport);
				e->role = PROBES_ROLE_CLIENT;
				e->state = oldstate;
				e->duration_ns = now - c->start_ns;
				ev_submit(e);
			}
		}
		bpf_map_delete_elem(&conns, &key);
		return 0;
	}

	if ((kinds & PROBES_K_CLOSE) && (c->owned || !proc_filters_on())) {
		struct probes_event *e = ev_reserve(PROBES_EV_CLOSE);
		if (e) {
			struct tcp_sock *tp = (struct tcp_sock *)ctx->skaddr;
			e->pid = c->pid;
			e->tid = c->tid;
			e->cgroup_id = c->cgroup_id;
			e->sock_ino = c->sock_ino;
			__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
			tuple_from_tp(&e->t, ctx->family, ctx->saddr, ctx->daddr,
				      ctx->saddr_v6, ctx->daddr_v6, ctx->sport,
				      ctx->dport);
			e->role = c->role;
			e->state = oldstate;
			e->closer = c->closer;
			if (e->closer == PROBES_CLOSER_UNKNOWN &&
			    (oldstate == TCP_ESTABLISHED ||
			     oldstate == TCP_CLOSE_WAIT ||
			     oldstate == TCP_SYN_RECV))
				e->closer = PROBES_CLOSER_RESET;
			/* Payload only: bytes_acked/bytes_received count the
			 * SYN and FIN sequence numbers too. bytes_sent counts
			 * payload including retransmissions; the FIN that
			 * bytes_received counts is flagged by SOCK_DONE
			 * (set by tcp_fin only). */
			e->bytes_sent = BPF_CORE_READ(tp, bytes_sent) -
					BPF_CORE_READ(tp, bytes_retrans);
			__u64 rcvd = BPF_CORE_READ(tp, bytes_received);
			unsigned long flags = BPF_CORE_READ((struct sock *)tp, __sk_common.skc_flags);
			if (rcvd && ((flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1))
				rcvd--;
			e->bytes_received = rcvd;
			e->duration_ns = now - c->start_ns;
			ev_submit(e);
		}
	}
	bpf_map_delete_elem(&conns, &key);
	return 0;
}

/* --------------------------------------------------------------- accept
 * The server socket reached ESTABLISHED in softirq context; the process
 * that owns it is the one whose accept()/accept4() returns its fd. */

struct syscalls_exit_args {
	__u64 common;
	int nr;
	long ret;
};

static __always_inline int probes_accept(long ret, const bool direct)
{
	if (ret < 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *f = bpfmgr_task_fd_file(task, (__u32)ret, direct);
	if (!f)
		return 0;
	/* Only a key: the sock pointer is compared, never dereferenced. */
	struct sock *sk = bpfmgr_file_sock_how(f, direct);
	if (!sk)
		return 0;
	struct probes_conn_key key = { .skaddr = (__u64)sk };
	struct probes_conn *c = bpf_map_lookup_elem(&conns, &key);
	if (!c) /* not TCP/inet, filtered, or established before we loaded */
		return 0;
	if (!proc_pass(id)) {
		bpf_map_delete_elem(&conns, &key);
		return 0;
	}
	set_owner_current(&c->pid, &c->tid, c->comm, &c->cgroup_id);
	struct inode *inode = BPFMGR_FIELD(direct, f, f_inode);
	c->sock_ino = inode ? BPFMGR_FIELD(direct, inode, i_ino) : 0;
	c->owned = 1;
	if (!(kinds & PROBES_K_ACCEPT))
		return 0;
	struct probes_event *e = ev_reserve(PROBES_EV_ACCEPT);
	if (!e)
		return 0;
	e->pid = c->pid;
	e->tid = c->tid;
	e->cgroup_id = c->cgroup_id;
	e->sock_ino = c->sock_ino;
	__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
	e->t = c->t;
	e->fd = (__u32)ret;
	e->role = PROBES_ROLE_SERVER;
	e->state = TCP_ESTABLISHED;
	e->duration_ns = e->ts_ns - c->established_ns; /* accept queue wait */
	ev_submit(e);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int probes_accept4_exit(struct syscalls_exit_args *ctx)
{
	return probes_accept(ctx->ret, BPFMGR_DIRECT);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int probes_accept_exit(struct syscalls_exit_args *ctx)
{
	return probes_accept(ctx->ret, BPFMGR_DIRECT);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int probes_accept4_exit_copy(struct syscalls_exit_args *ctx)
{
	return probes_accept(ctx->ret, BPFMGR_COPY);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int probes_accept_exit_copy(struct syscalls_exit_args *ctx)
{
	return probes_accept(ctx->ret, BPFMGR_COPY);
}

/* ------------------------------------------------------- network events */

static __always_inline void tuple_from_tcp_tp(struct probes_tuple *t,
					      const struct bpfmgr_tcp_tp_tuple *tp)
{
	t->family = tp->family;
	t->proto = IPPROTO_TCP;
	t->sport = tp->sport;
	t->dport = tp->dport;
	__builtin_memcpy(t->saddr, tp->saddr, sizeof(t->saddr));
	__builtin_memcpy(t->daddr, tp->daddr, sizeof(t->daddr));
}

/* Two record layouts across kernels (compat.bpf.h); `err` on 6.14+. */
SEC("tracepoint/tcp/tcp_retransmit_skb")
int probes_retransmit(void *ctx)
{
	struct bpfmgr_tcp_tp_tuple tp = {};
	struct probes_tuple t = {};
	bpfmgr_tcp_retransmit_tuple(ctx, &tp);
	tuple_from_tcp_tp(&t, &tp);
	if (!tuple_pass(&t) || !owner_pass((__u64)tp.skaddr))
		return 0;
	struct probes_event *e = ev_reserve(PROBES_EV_RETRANSMIT);
	if (!e)
		return 0;
	fill_owner(e, (__u64)tp.skaddr);
	e->t = t;
	e->state = tp.state;
	e->ret = tp.err;
	ev_submit(e);
	return 0;
}

/* Two record layouts across kernels (compat.bpf.h): the reason, and resets
 * sent without a socket (a closed port), on 6.10+ only. */
SEC("tracepoint/tcp/tcp_send_reset")
int probes_send_reset(void *ctx)
{
	struct bpfmgr_tcp_tp_tuple tp = {};
	struct probes_tuple t = {};
	int reason = 0;
	bpfmgr_tcp_send_reset_tuple(ctx, &tp, &reason);
	tuple_from_tcp_tp(&t, &tp);
	if (!tuple_pass(&t) || !owner_pass((__u64)tp.skaddr))
		return 0;
	struct probes_event *e = ev_reserve(PROBES_EV_RESET_SENT);
	if (!e)
		return 0;
	fill_owner(e, (__u64)tp.skaddr);
	e->t = t;
	e->state = tp.state;
	e->reason = reason;
	ev_submit(e);
	return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int probes_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	struct probes_tuple t = {};
	tuple_from_tp(&t, ctx->family, ctx->saddr, ctx->daddr, ctx->saddr_v6,
		      ctx->daddr_v6, ctx->sport, ctx->dport);
	if (!tuple_pass(&t) || !owner_pass((__u64)ctx->skaddr))
		return 0;
	struct probes_event *e = ev_reserve(PROBES_EV_RESET_RECV);
	if (!e)
		return 0;
	fill_owner(e, (__u64)ctx->skaddr);
	e->t = t;
	e->state = BPF_CORE_READ((struct sock *)ctx->skaddr,
				 __sk_common.skc_state);
	ev_submit(e);
	return 0;
}

/* Tuple of a packet from its IP/TCP/UDP headers (source = packet source). */
static __always_inline bool tuple_from_skb(struct probes_tuple *t,
					   struct sk_buff *skb, __u16 proto_be)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u16 proto = bpf_ntohs(proto_be);
	__u8 l4 = 0;
	if (nh == (__u16)~0U)
		return false;
	if (proto == ETH_P_IP) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		t->family = AF_INET;
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		l4 = ip.protocol;
		if (th == (__u16)~0U || th <= nh)
			th = nh + ip.ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		t->family = AF_INET6;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		l4 = ip6.nexthdr;
		if (th == (__u16)~0U || th <= nh)
			th = nh + sizeof(ip6);
	} else {
		return false;
	}
	t->proto = l4;
	if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP) {
		__u16 ports[2] = {};
		bpf_probe_read_kernel(ports, sizeof(ports), head + th);
		t->sport = bpf_ntohs(ports[0]);
		t->dport = bpf_ntohs(ports[1]);
	}
	return true;
}

/* `rx_sk` on 6.12+ (compat.bpf.h). */
SEC("tracepoint/skb/kfree_skb")
int probes_kfree_skb(struct trace_event_raw_kfree_skb___bpfmgr *ctx)
{
	struct probes_tuple t = {};
	struct sk_buff *skb = (struct sk_buff *)ctx->skbaddr;
	if (!tuple_from_skb(&t, skb, BPF_CORE_READ(skb, protocol)))
		return 0;
	if (!tuple_pass(&t))
		return 0;
	__u64 sk = (__u64)bpfmgr_kfree_skb_sock(ctx);
	if (!owner_pass(sk))
		return 0;
	struct probes_event *e = ev_reserve(PROBES_EV_DROP);
	if (!e)
		return 0;
	fill_owner(e, sk);
	e->t = t;
	e->reason = ctx->reason;
	ev_submit(e);
	return 0;
}

/* Raw: TP_PROTO(struct sock *sk, struct sk_buff *skb). */
SEC("raw_tp/sock_rcvqueue_full")
int probes_rcvq_full(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	struct sk_buff *skb = (struct sk_buff *)ctx->args[1];
	struct probes_tuple t = {};
	tuple_from_sk(&t, sk);
	if (t.family != AF_INET && t.family != AF_INET6)
		return 0;
	if (!tuple_pass(&t) || !owner_pass((__u64)sk))
		return 0;
	struct probes_event *e = ev_reserve(PROBES_EV_RCVQ_FULL);
	if (!e)
		return 0;
	if (!fill_owner(e, (__u64)sk))
		e->sock_ino = sock_ino_of(sk);
	if (!e->sock_ino)
		e->sock_ino = sock_ino_of(sk);
	e->t = t;
	e->rmem_alloc = BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter);
	e->rcvbuf = BPF_CORE_READ(sk, sk_rcvbuf);
	e->bytes_received = BPF_CORE_READ(skb, truesize);
	ev_submit(e);
	return 0;
}

/* ---------------------------------------------------- syscall tracers
 * One program on raw sys_enter, one on raw sys_exit, for all ten syscalls
 * (x86_64 numbers).
 *
 * The exit program does the accounting: on x86_64 pt_regs still holds the
 * arguments at sys_exit (di = fd, si = buffer/msgvec), so calls and bytes
 * need no per-thread state. The enter program only takes the timestamp for
 * the latency histogram, for one call in latency_sample_every per CPU
 * (bpf_ktime_get_ns costs ~37 ns on this VM; two per call would double the
 * cost of the hooks). Untraced syscalls pay a compare on the number. */

const volatile __u32 latency_sample_mask = 0; /* sample_every - 1 (2^n) */

/* Threads with a timestamp waiting for their sys_exit; lets exits skip the
 * task-storage lookup when nothing is in flight (sampled mode). */
__u64 inflight_count = 0;

struct sample_ctr {
	__u64 n;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample_ctr);
} sample_ctr SEC(".maps");

static __always_inline int op_of(long nr)
{
	switch (nr) {
	case BPFMGR_NR_read: return PROBES_OP_READ;
	case BPFMGR_NR_write: return PROBES_OP_WRITE;
	case BPFMGR_NR_readv: return PROBES_OP_READV;
	case BPFMGR_NR_writev: return PROBES_OP_WRITEV;
	case BPFMGR_NR_sendto: return PROBES_OP_SENDTO;
	case BPFMGR_NR_recvfrom: return PROBES_OP_RECVFROM;
	case BPFMGR_NR_sendmsg: return PROBES_OP_SENDMSG;
	case BPFMGR_NR_recvmsg: return PROBES_OP_RECVMSG;
	case BPFMGR_NR_recvmmsg: return PROBES_OP_RECVMMSG;
	case BPFMGR_NR_sendmmsg: return PROBES_OP_SENDMMSG;
	default: return -1;
	}
}

static __always_inline bool op_is_write(__u32 op)
{
	return op >= PROBES_OP_WRITE;
}

static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0, shift;
	shift = (v > 0xFFFFFFFF) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r < PROBES_HIST_SLOTS ? r : PROBES_HIST_SLOTS - 1;
}

/* The inode of the file behind fd if the tracers want it (socket check and
 * the family and port filters); NULL otherwise. */
static __always_inline struct inode *traced_inode(struct task_struct *task, __u32 fd,
						  const bool direct)
{
	struct file *f = bpfmgr_task_fd_file(task, fd, direct);
	if (!f)
		return NULL;
	struct inode *inode = BPFMGR_FIELD(direct, f, f_inode);
	if (!inode)
		return NULL;
	bool is_sock = (BPFMGR_FIELD(direct, inode, i_mode) & BPFMGR_S_IFMT) ==
		       BPFMGR_S_IFSOCK;
	if (sockets_only && !is_sock)
		return NULL;
	if (family_mask != 3 || filter_ports) {
		if (!is_sock)
			return NULL;
		struct sock *sk = bpfmgr_file_sock_how(f, direct);
		if (!sk)
			return NULL;
		__u16 fam = BPFMGR_FIELD(direct, sk, __sk_common.skc_family);
		if (family_mask != 3) {
			if (fam != AF_INET && fam != AF_INET6)
				return NULL;
			if (direct) {
				if (!family_pass(fam, (const __u8 *)&sk->__sk_common.skc_v6_daddr))
					return NULL;
			} else {
				__u8 d6[16] = {};
				if (fam == AF_INET6)
					BPF_CORE_READ_INTO(&d6, sk, __sk_common.skc_v6_daddr);
				if (!family_pass(fam, d6))
					return NULL;
			}
		}
		if (filter_ports &&
		    !ports_pass(BPFMGR_FIELD(direct, sk, __sk_common.skc_num),
				bpf_ntohs(BPFMGR_FIELD(direct, sk, __sk_common.skc_dport))))
			return NULL;
	}
	return inode;
}

static __always_inline struct probes_sys_stats *
sys_slot(const struct probes_sys_key *k)
{
	__u64 h = k->sock_ino * 0x9E3779B97F4A7C15ULL;
	h ^= (((__u64)k->tgid << 8) | k->op) * 0xC2B2AE3D27D4EB4FULL;
	h ^= h >> 31;
	for (__u32 i = 0; i < PROBES_SYS_PROBE; i++) {
		__u32 idx = (__u32)(h + i) & sys_slots_mask;
		struct probes_sys_slot *sl = bpf_map_lookup_elem(&syscall_stats, &idx);
		if (!sl)
			return NULL;
		if (sl->key.tgid == k->tgid && sl->key.op == k->op &&
		    sl->key.sock_ino == k->sock_ino)
			return &sl->s;
		if (sl->key.tgid == 0) { /* free: claim it on this CPU */
			sl->key = *k;
			bpf_get_current_comm(sl->s.comm, sizeof(sl->s.comm));
			return &sl->s;
		}
	}
	return NULL;
}

static __always_inline int sys_enter(struct bpf_raw_tracepoint_args *ctx,
				     const bool direct)
{
	int op = op_of(ctx->args[1]);
	if (op < 0 || !((traced_ops >> op) & 1))
		return 0;
	if (latency_sample_mask) {
		__u32 zero = 0;
		struct sample_ctr *sc = bpf_map_lookup_elem(&sample_ctr, &zero);
		if (!sc || (++sc->n & latency_sample_mask))
			return 0;
	}
	if (proc_filters_on() && !proc_pass(bpf_get_current_pid_tgid()))
		return 0;
	bpfmgr_sys_regs *regs = bpfmgr_sys_regs_at(ctx, direct);
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 fd = BPFMGR_SYS_ARG1_AT(direct, regs);
	if (!traced_inode(task, fd, direct))
		return 0;
	struct probes_inflight *in = bpf_task_storage_get(
		&inflight, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in) {
		COUNT(inflight_nomem);
		return 0;
	}
	if (latency_sample_mask && !in->ts)
		__sync_fetch_and_add(&inflight_count, 1);
	in->op = op;
	in->fd = fd;
	in->ts = bpf_ktime_get_ns();
	return 0;
}

static __always_inline __u64 mmsg_bytes(__u64 msgvec, long n)
{
	__u64 sum = 0;
	for (int i = 0; i < PROBES_MMSG_MAX; i++) {
		if (i >= n)
			break;
		__u32 len = 0;
		bpf_probe_read_user(&len, sizeof(len),
				    (void *)(msgvec + i * sizeof(struct mmsghdr) +
					     offsetof(struct mmsghdr, msg_len)));
		sum += len;
	}
	if (n > PROBES_MMSG_MAX)
		COUNT(mmsg_truncated);
	return sum;
}

static __always_inline int sys_exit(struct bpf_raw_tracepoint_args *ctx,
				    const bool direct)
{
	bpfmgr_sys_regs *regs = bpfmgr_sys_regs_at(ctx, direct);
	int op = op_of(BPFMGR_SYSCALL_NR_AT(direct, regs));
	if (op < 0 || !((traced_ops >> op) & 1))
		return 0;
	if (proc_filters_on() && !proc_pass(bpf_get_current_pid_tgid()))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();

	/* Latency, when sys_enter took a timestamp for this call. */
	__u64 lat = 0;
	bool timed = false;
	if (!latency_sample_mask || inflight_count) {
		struct probes_inflight *in = bpf_task_storage_get(&inflight, task, 0, 0);
		if (in && in->ts) {
			if (in->op == op) {
				lat = bpf_ktime_get_ns() - in->ts;
				timed = true;
			}
			in->ts = 0;
			if (latency_sample_mask)
				__sync_fetch_and_add(&inflight_count, -1);
		}
	}

	__u32 fd = BPFMGR_SYS_ARG1_AT(direct, regs);
	struct inode *inode = traced_inode(task, fd, direct);
	if (!inode)
		return 0;
	long ret = ctx->args[1];
	__u64 bytes = 0;
	if (ret > 0) {
		if (op == PROBES_OP_RECVMMSG || op == PROBES_OP_SENDMMSG)
			bytes = mmsg_bytes(BPFMGR_SYS_ARG2_AT(direct, regs), ret);
		else
			bytes = ret;
	}

	struct probes_sys_key k = {
		.tgid = task->tgid,
		.op = op,
		.sock_ino = BPFMGR_FIELD(direct, inode, i_ino),
	};
	struct probes_sys_stats *s = sys_slot(&k);
	if (!s) {
		COUNT(sys_stats_full);
		return 0;
	}
	s->calls++;
	if (ret < 0)
		s->errors++;
	s->bytes += bytes;
	if (timed) {
		s->timed_calls++;
		s->total_ns += lat;
		s->hist[log2_slot(lat)]++;
	}

	if (!syscall_events)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct probes_event *e = ev_reserve(PROBES_EV_SYSCALL);
	if (!e)
		return 0; /* counted as dropped */
	e->pid = id >> 32;
	e->tid = (__u32)id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->cgroup_id = cgroup_id;
	e->sock_ino = k.sock_ino;
	e->op = op;
	e->fd = fd;
	e->ret = ret;
	e->duration_ns = lat;
	if (op_is_write(op))
		e->bytes_sent = bytes;
	else
		e->bytes_received = bytes;
	ev_submit(e);
	return 0;
}

SEC("raw_tp/sys_enter")
int probes_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	return sys_enter(ctx, BPFMGR_DIRECT);
}

SEC("raw_tp/sys_exit")
int probes_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	return sys_exit(ctx, BPFMGR_DIRECT);
}

SEC("raw_tp/sys_enter")
int probes_sys_enter_copy(struct bpf_raw_tracepoint_args *ctx)
{
	return sys_enter(ctx, BPFMGR_COPY);
}

SEC("raw_tp/sys_exit")
int probes_sys_exit_copy(struct bpf_raw_tracepoint_args *ctx)
{
	return sys_exit(ctx, BPFMGR_COPY);
}
