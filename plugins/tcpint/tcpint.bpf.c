// SPDX-License-Identifier: GPL-2.0
/* tcpint: in-band flow context in a TCP header option.
 *
 * Programs:
 *  - tcpint_sockops (sock_ops, cgroup): selects flows at connect /
 *    established, enables the header-option callbacks for them only,
 *    reserves, writes and parses the option (wire format in tcpint.h);
 *  - tcpint_sys_enter (raw tracepoint sys_enter, filtered by syscall nr):
 *    keeps each flow's send context current (process, messages, bytes,
 *    time) by joining (task, fd) -> struct socket -> sock -> tuple, with
 *    direct BTF loads (the bpf_rdonly_cast kfunc, Linux 6.2+);
 *  - tcpint_sys_enter_probe: the same with bpf_probe_read_kernel, for
 *    kernels without that kfunc. The plugin loads one of the two
 *    (set_autoload in before_load); docs/tcpint.md lists what each program
 *    relies on.
 */
#include "bpfmgr/bpf_common.h"
#include "bpfmgr/kfuncs.h"
#include "bpfmgr/socket.h"
#include "bpfmgr/syscalls.h"
#include "tcpint.h"

/* Weak: on a kernel without the kfunc (6.1) libbpf leaves it unresolved
 * instead of failing the whole object; only tcpint_sys_enter calls it, and
 * the plugin does not load that program there. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef ENOSPC
#define ENOSPC 28
#endif
#ifndef EEXIST
#define EEXIST 17
#endif
#ifndef ENOMSG
#define ENOMSG 42
#endif
#ifndef TCP_CLOSE
#define TCP_CLOSE 7
#endif
#define TCPHDR_FIN 0x01
#define TCPHDR_SYN 0x02
#define IPPROTO_TCP_NR 6

/* ------------------------------------------------------------ settings */
/* Set by the plugin before load (InstanceContext::set_global). */
const volatile __u8 opt_kind = TCPINT_DEFAULT_KIND;
const volatile __u16 opt_exid = TCPINT_DEFAULT_EXID;
const volatile __u16 sender_id = 0;
const volatile __u8 segments = TCPINT_SEG_SYN | TCPINT_SEG_ACK |
			       TCPINT_SEG_DATA | TCPINT_SEG_FIN;
const volatile bool filter_ports = false;
const volatile bool filter_cidrs = false;
const volatile bool propagate = true;
/* No syscall hook can change a flow's context after its handshake. */
const volatile bool ctx_static = false;
/* sock_ops may call bpf_get_current_pid_tgid (6.10+) and
 * bpf_get_current_comm (6.16+); false: the connecting task is read with
 * bpf_get_current_task + bpf_probe_read_kernel (6.0+). The verifier drops
 * the branch not taken, so a kernel never sees a helper it refuses. */
const volatile bool sockops_task_helpers = true;
/* Syscall hooks only look at tasks under this cgroup (level 0: all). */
const volatile __u32 cgroup_level = 0;
const volatile __u64 cgroup_id = 0;

/* ---------------------------------------------------------------- maps */
/* What this host sends per flow. Sized by `max_flows`; LRU so that a
 * closed flow stays readable (closed_ns set) until space is needed. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tcpint_tuple);
	__type(value, struct tcpint_tx_ctx);
} flow_context_map SEC(".maps");

/* The peer's context as received per flow. Same sizing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tcpint_tuple);
	__type(value, struct tcpint_rx_ctx);
} rx_context_map SEC(".maps");

/* Per thread: the tracked flow it last received on (trace propagation).
 * One entry per recently active thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct tcpint_thread_ctx);
} thread_map SEC(".maps");

/* Flow selection, filled by the plugin after load from `ports`/`cidrs`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} port_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tcpint_cidr_key);
	__type(value, __u8);
} cidr_filter SEC(".maps");

/* Per-socket sock_ops state (pending handshake ACK). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tcpint_sk_state);
} sk_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPINT_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* (helper, errno) -> count, for failures other than "no room". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct tcpint_helper_err);
	__type(value, __u64);
} helper_errors SEC(".maps");

/* ------------------------------------------------------------- helpers */
static __always_inline void count(__u32 slot)
{
	bpfmgr_count(&counters, slot);
}

static __always_inline void helper_error(__u32 helper, long err)
{
	struct tcpint_helper_err key = { .helper = helper,
					 .err = (__u32)(err < 0 ? -err : err) };
	__u64 one = 1, *v;

	count(TCPINT_C_HELPER_ERRORS);
	v = bpf_map_lookup_elem(&helper_errors, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&helper_errors, &key, &one, BPF_NOEXIST);
}

static __always_inline void set_addr(__u8 *dst, __u32 w0, __u32 w1, __u32 w2,
				     __u32 w3)
{
	__u32 *w = (__u32 *)dst;

	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = w3;
}

/* Canonical form: IPv4 and v4-mapped both become family AF_INET with
 * ::ffff:a.b.c.d addresses; native IPv6 stays AF_INET6. */
static __always_inline void canonicalize(struct tcpint_tuple *t)
{
	if (t->family == AF_INET6 && bpfmgr_is_v4_mapped(t->local_addr) &&
	    bpfmgr_is_v4_mapped(t->remote_addr))
		t->family = AF_INET;
}

/* Every ctx field is loaded unconditionally, each at its own ctx offset:
 * loading them inside the family branches lets clang share one modified
 * ctx pointer between the v4 and v6 paths, which the verifier refuses. */
#define CTX_U32(skops, field) (*(volatile __u32 *)&(skops)->field)

static __always_inline int tuple_from_skops(const struct bpf_sock_ops *skops,
					    struct tcpint_tuple *t)
{
	__u32 family = CTX_U32(skops, family);
	__u32 l4 = CTX_U32(skops, local_ip4), r4 = CTX_U32(skops, remote_ip4);
	__u32 l0 = CTX_U32(skops, local_ip6[0]), l1 = CTX_U32(skops, local_ip6[1]);
	__u32 l2 = CTX_U32(skops, local_ip6[2]), l3 = CTX_U32(skops, local_ip6[3]);
	__u32 r0 = CTX_U32(skops, remote_ip6[0]), r1 = CTX_U32(skops, remote_ip6[1]);
	__u32 r2 = CTX_U32(skops, remote_ip6[2]), r3 = CTX_U32(skops, remote_ip6[3]);
	__u32 lport = CTX_U32(skops, local_port), rport = CTX_U32(skops, remote_port);

	if (family == AF_INET) {
		set_addr(t->local_addr, 0, 0, bpf_htonl(0x0000ffff), l4);
		set_addr(t->remote_addr, 0, 0, bpf_htonl(0x0000ffff), r4);
	} else if (family == AF_INET6) {
		set_addr(t->local_addr, l0, l1, l2, l3);
		set_addr(t->remote_addr, r0, r1, r2, r3);
	} else {
		return -1;
	}
	t->family = family;
	t->local_port = (__u16)lport;
	t->remote_port = (__u16)bpf_ntohl(rport); /* be16 in the upper half */
	t->pad = 0;
	canonicalize(t);
	return 0;
}

static __always_inline bool flow_selected(const struct tcpint_tuple *t)
{
	if (filter_ports) {
		__u16 lp = t->local_port, rp = t->remote_port;

		if (!bpf_map_lookup_elem(&port_filter, &lp) &&
		    !bpf_map_lookup_elem(&port_filter, &rp))
			return false;
	}
	if (filter_cidrs) {
		struct tcpint_cidr_key key = { .prefixlen = 128 };

		__builtin_memcpy(key.addr, t->remote_addr, 16);
		if (!bpf_map_lookup_elem(&cidr_filter, &key))
			return false;
	}
	return true;
}

static __always_inline void enable_hdr_cbs(struct bpf_sock_ops *skops)
{
	int flags = skops->bpf_sock_ops_cb_flags |
		    BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG |
		    BPF_SOCK_OPS_STATE_CB_FLAG;
	long err;

	/* Other sock_ops programs on the cgroup may have set flags too:
	 * keep theirs, add ours. */
	if (segments)
		flags |= BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
	if (flags == skops->bpf_sock_ops_cb_flags)
		return;
	err = bpf_sock_ops_cb_flags_set(skops, flags);
	if (err)
		helper_error(TCPINT_H_CB_FLAGS, err);
}

/* Trace id this thread should carry on: the received trace id of the
 * tracked flow it last read from (recorded by the recv hook, so a send
 * costs one small lookup). */
static __always_inline bool inherited_trace(__u32 tid,
					    const struct tcpint_tuple *self,
					    __u32 *trace_id)
{
	struct tcpint_thread_ctx *th;

	if (!propagate)
		return false;
	th = bpf_map_lookup_elem(&thread_map, &tid);
	if (!th)
		return false;
	*trace_id = th->trace_id;
	return true;
}

/* --------------------------------------------------------- option parse */

struct opt_walk {
	__u8 buf[40]; /* the segment's TCP options, copied from the packet */
	__u32 len;    /* bytes valid in buf */
	__u32 off;    /* walk position */
	__u32 foreign;
};

static long opt_walk_step(__u64 index, void *arg)
{
	struct opt_walk *w = arg;
	__u32 off = w->off;
	__u8 k, l;

	if (off >= w->len || off >= 39)
		return 1;
	k = w->buf[off & 63];
	if (k == 0) /* EOL */
		return 1;
	if (k == 1) { /* NOP */
		w->off = off + 1;
		return 0;
	}
	l = w->buf[(off + 1) & 63];
	if (l < 2 || off + l > w->len)
		return 1;
	if (k == opt_kind && l >= 4 && off + 3 < 40) {
		__u16 exid = ((__u16)w->buf[(off + 2) & 63] << 8) |
			     w->buf[(off + 3) & 63];

		if (exid != opt_exid && exid != TCPINT_TFO_EXID) {
			w->foreign = 1;
			return 1;
		}
	}
	w->off = off + l;
	return 0;
}

/* Called when our option (kind + ExID) was not found: look for one of our
 * kind with another ExID and count it (bpf_load_hdr_opt cannot search an
 * experimental kind without a magic). */
static __noinline void count_foreign_magic(struct bpf_sock_ops *skops)
{
	void *data = skops->skb_data, *end = skops->skb_data_end;
	struct tcphdr *th = data;
	struct opt_walk w = {};
	__u8 *opts;
	__u32 optlen;
	int i;

	if (!skops || (void *)(th + 1) > end)
		return;
	optlen = th->doff * 4;
	if (optlen <= sizeof(*th))
		return;
	optlen -= sizeof(*th);
	opts = (__u8 *)(th + 1);
	for (i = 0; i < 40; i++) {
		if (i >= optlen || (void *)(opts + i + 1) > end)
			break;
		w.buf[i] = opts[i];
		w.len = i + 1;
	}
	bpf_loop(40, opt_walk_step, &w, 0);
	if (w.foreign)
		count(TCPINT_C_REJECTED_MAGIC);
}

/* Loads our option from the current skb (or the saved SYN with
 * BPF_LOAD_HDR_OPT_TCP_SYN) and stores it as the flow's received context.
 * Returns 0 when a valid option was stored. */
static __always_inline int parse_option(struct bpf_sock_ops *skops,
					const struct tcpint_tuple *t,
					__u64 load_flags)
{
	struct tcpint_opt o = {};
	struct tcpint_rx_ctx *rx, fresh = {};
	__u64 now;
	long ret;

	o.kind = opt_kind;
	o.len = 4; /* search by kind + 2-byte ExID */
	o.exid = bpf_htons(opt_exid);
	ret = bpf_load_hdr_opt(skops, &o, sizeof(o), load_flags);
	if (ret == -ENOMSG) {
		if (!load_flags)
			count_foreign_magic(skops);
		return -ENOMSG;
	}
	if (ret == -ENOSPC) { /* longer than ours */
		count(TCPINT_C_REJECTED_LEN);
		return -ENOSPC;
	}
	if (ret < 0) {
		if (ret != -ENOENT) /* ENOENT: no saved SYN, expected */
			helper_error(TCPINT_H_LOAD, ret);
		return (int)ret;
	}
	if (ret != TCPINT_OPT_LEN || o.len != TCPINT_OPT_LEN ||
	    o.version != TCPINT_VERSION) {
		count(TCPINT_C_REJECTED_LEN);
		return -1;
	}
	count(TCPINT_C_PARSED);

	now = bpf_ktime_get_ns();
	rx = bpf_map_lookup_elem(&rx_context_map, t);
	if (rx) {
		rx->last_seen_ns = now;
		rx->options++;
		rx->trace_id = bpf_ntohl(o.trace_id);
		rx->msg_count = bpf_ntohl(o.msg_count);
		rx->send_ts_us = bpf_ntohl(o.send_ts_us);
		rx->sender_id = bpf_ntohs(o.sender_id);
		rx->version = o.version;
		rx->flags = o.flags | (rx->flags & TCPINT_F_FIN);
		rx->closed_ns = 0;
		return 0;
	}
	fresh.first_seen_ns = now;
	fresh.last_seen_ns = now;
	fresh.options = 1;
	fresh.trace_id = bpf_ntohl(o.trace_id);
	fresh.msg_count = bpf_ntohl(o.msg_count);
	fresh.send_ts_us = bpf_ntohl(o.send_ts_us);
	fresh.sender_id = bpf_ntohs(o.sender_id);
	fresh.version = o.version;
	fresh.flags = o.flags;
	ret = bpf_map_update_elem(&rx_context_map, t, &fresh, BPF_ANY);
	if (ret)
		helper_error(TCPINT_H_MAP_UPDATE, ret);
	else
		count(TCPINT_C_RX_FLOWS);
	return 0;
}

/* ------------------------------------------------------------ contexts */

static __always_inline void create_tx(const struct tcpint_tuple *t,
				      bool active, bool in_process)
{
	struct tcpint_tx_ctx c = {};
	struct tcpint_rx_ctx *rx;
	long err;

	c.created_ns = bpf_ktime_get_ns();
	c.trace_id = bpf_get_prandom_u32();
	c.sender_id = sender_id;
	c.flags = active ? 0 : TCPINT_F_PASSIVE;
	if (in_process) {
		__u32 trace;

		if (sockops_task_helpers) {
			__u64 id = bpf_get_current_pid_tgid();

			c.pid = id >> 32;
			c.tid = (__u32)id;
			bpf_get_current_comm(c.comm, sizeof(c.comm));
		} else {
			/* A scalar address, read only through the
			 * fault-handling helper: nothing here depends on what
			 * the verifier lets a sock_ops program dereference. */
			struct task_struct *task =
				(struct task_struct *)bpf_get_current_task();

			c.pid = BPF_CORE_READ(task, tgid);
			c.tid = BPF_CORE_READ(task, pid);
			bpf_probe_read_kernel_str(c.comm, sizeof(c.comm),
						  &task->comm);
		}
		if (inherited_trace(c.tid, t, &trace)) {
			c.trace_id = trace;
			c.flags |= TCPINT_F_INHERITED;
			count(TCPINT_C_INHERITED);
		}
	} else if (!active && propagate) {
		/* The passive side answers within the trace it was called
		 * with. */
		rx = bpf_map_lookup_elem(&rx_context_map, t);
		if (rx) {
			c.trace_id = rx->trace_id;
			c.flags |= TCPINT_F_INHERITED;
			count(TCPINT_C_INHERITED);
		}
	}
	err = bpf_map_update_elem(&flow_context_map, t, &c, BPF_ANY);
	if (err)
		helper_error(TCPINT_H_MAP_UPDATE, err);
	else
		count(TCPINT_C_TX_FLOWS);
}

static __always_inline struct tcpint_sk_state *
sk_state_get(struct bpf_sock_ops *skops, bool create)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sk_state, sk, NULL,
				  create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

/* ------------------------------------------------- header option writes */

/* Which of our segment classes this skb is; 0 when we do not write on it.
 * `writing`: in WRITE_HDR_OPT_CB skb_len includes the TCP header. */
static __always_inline __u8 segment_class(struct bpf_sock_ops *skops,
					  bool writing)
{
	__u8 tcp_flags = skops->skb_tcp_flags;
	__u32 payload = skops->skb_len;

	if (tcp_flags & TCPHDR_SYN)
		return TCPINT_SEG_SYN;
	if (tcp_flags & TCPHDR_FIN)
		return TCPINT_SEG_FIN;
	if (writing) {
		struct tcphdr *th = skops->skb_data;

		if ((void *)(th + 1) > skops->skb_data_end)
			return 0;
		payload = payload > th->doff * 4u ? payload - th->doff * 4u : 0;
	}
	return payload ? TCPINT_SEG_DATA : TCPINT_SEG_ACK;
}

/* Segment classes written, with data_changed counted as data (the
 * reservation decides which data segments actually carry it). */
#define SEG_WRITTEN                                                          \
	(segments | ((segments & TCPINT_SEG_DATA_CHANGED) ? TCPINT_SEG_DATA : 0))

/* Bumped whenever a flow's trace id or flags change after it was created
 * (the syscall hook inheriting a trace). A socket that found its context
 * unchanged at generation N needs no tuple and no hash lookup while the
 * generation stays N: the per-segment test is one socket-storage read and
 * one load. */
__u32 ctx_changes = 0;

/* data_changed: true when the context the option would carry (trace id,
 * flags) differs from the last option this socket wrote. */
static __always_inline bool data_ctx_changed(struct bpf_sock_ops *skops)
{
	struct tcpint_sk_state *st = sk_state_get(skops, false);
	struct tcpint_tuple t = {};
	struct tcpint_tx_ctx *c;
	__u32 gen;
	bool changed;

	if (!st || !st->written)
		return true;
	/* read before the lookup: a change racing with it leaves the
	 * socket at the old generation, so it looks again next time */
	gen = *(volatile __u32 *)&ctx_changes;
	if (st->seen_changes == gen)
		return false;
	if (tuple_from_skops(skops, &t))
		return false;
	c = bpf_map_lookup_elem(&flow_context_map, &t);
	if (!c)
		return false;
	changed = c->trace_id != st->last_trace ||
		  (c->flags & (TCPINT_F_INHERITED | TCPINT_F_PASSIVE)) !=
			  st->last_flags;
	if (!changed)
		st->seen_changes = gen;
	return changed;
}

/* data_changed reserves nothing when the kernel sizes full segments (the
 * MSS stays whole, so bulk transfers lose no payload): a segment carries
 * the option only if its payload leaves room for it, else the change waits
 * for the next segment that has room (DeepFlow writes its option the same
 * way). `data` mode reserves in the MSS and writes on every segment. */
static __always_inline bool fits_unreserved(struct bpf_sock_ops *skops)
{
	__u32 mss = skops->mss_cache;

	if (segments & TCPINT_SEG_DATA)
		return true; /* reserved in the MSS */
	return !mss || skops->skb_len + TCPINT_OPT_LEN <= mss;
}

/* data_changed with a context nothing can change (ctx_static): once the
 * peer has it (handshake ACK or first data segment), the socket stops
 * asking for header-option callbacks, so its later segments run no BPF at
 * all; the state callback turns them back on when the socket starts to
 * close, so the FIN still carries the final count. */
static __always_inline bool quiet_mode(void)
{
	return ctx_static && (segments & TCPINT_SEG_DATA_CHANGED) &&
	       !(segments & TCPINT_SEG_DATA);
}

static __always_inline void set_write_cb(struct bpf_sock_ops *skops, bool on)
{
	int flags = skops->bpf_sock_ops_cb_flags;
	int want = on ? flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG
		      : flags & ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
	long err;

	if (want == flags)
		return;
	err = bpf_sock_ops_cb_flags_set(skops, want);
	if (err)
		helper_error(TCPINT_H_CB_FLAGS, err);
}

static __always_inline void quiet_until_fin(struct bpf_sock_ops *skops)
{
	if (quiet_mode())
		set_write_cb(skops, false);
}

static __always_inline void handle_hdr_opt_len(struct bpf_sock_ops *skops)
{
	__u8 cls;
	long err;

	if (skops->args[0] == BPF_WRITE_HDR_TCP_CURRENT_MSS) {
		/* The kernel is sizing full data segments: reserve what a
		 * data segment will carry so that MSS accounts for it. */
		if (segments & TCPINT_SEG_DATA)
			bpf_reserve_hdr_opt(skops, TCPINT_OPT_LEN, 0);
		return;
	}
	cls = segment_class(skops, false);
	if (!(SEG_WRITTEN & cls))
		return;
	if (cls == TCPINT_SEG_ACK) {
		struct tcpint_sk_state *st = sk_state_get(skops, false);

		if (!st || !st->pending_ack)
			return;
	}
	if (cls == TCPINT_SEG_DATA && !(segments & TCPINT_SEG_DATA) &&
	    !data_ctx_changed(skops))
		return;
	if ((cls == TCPINT_SEG_DATA || cls == TCPINT_SEG_FIN) &&
	    !fits_unreserved(skops)) {
		count(TCPINT_C_DEFERRED);
		return;
	}
	err = bpf_reserve_hdr_opt(skops, TCPINT_OPT_LEN, 0);
	if (err == -ENOSPC)
		count(TCPINT_C_NO_ROOM); /* the segment goes out without it */
	else if (err)
		helper_error(TCPINT_H_RESERVE, err);
}

static __always_inline void handle_write_hdr_opt(struct bpf_sock_ops *skops)
{
	struct tcpint_tuple t = {};
	struct tcpint_tx_ctx *c;
	struct tcpint_opt o;
	__u8 cls, flags;
	long err;

	cls = segment_class(skops, true);
	if (!(SEG_WRITTEN & cls))
		return;
	if (tuple_from_skops(skops, &t))
		return;
	c = bpf_map_lookup_elem(&flow_context_map, &t);
	if (!c) {
		count(TCPINT_C_NO_CONTEXT);
		return;
	}
	flags = c->flags & (TCPINT_F_INHERITED | TCPINT_F_PASSIVE);
	if (cls == TCPINT_SEG_SYN)
		flags |= TCPINT_F_SYN;
	if (cls == TCPINT_SEG_FIN)
		flags |= TCPINT_F_FIN;

	o.kind = opt_kind;
	o.len = TCPINT_OPT_LEN;
	o.exid = bpf_htons(opt_exid);
	o.version = TCPINT_VERSION;
	o.flags = flags;
	o.sender_id = bpf_htons(c->sender_id);
	o.trace_id = bpf_htonl(c->trace_id);
	o.msg_count = bpf_htonl(c->msg_count);
	o.send_ts_us = bpf_htonl((__u32)(bpf_ktime_get_tai_ns() / 1000));
	err = bpf_store_hdr_opt(skops, &o, sizeof(o), 0);
	if (err == -ENOSPC) {
		/* Room reserved by us was taken (e.g. by another program). */
		count(TCPINT_C_NO_ROOM);
		return;
	}
	if (err) {
		helper_error(TCPINT_H_STORE, err);
		return;
	}
	count(TCPINT_C_WRITTEN);
	{
		struct tcpint_sk_state *st = sk_state_get(skops, false);

		if (st) {
			if (cls == TCPINT_SEG_ACK || cls == TCPINT_SEG_DATA)
				st->pending_ack = 0;
			st->written = 1;
			st->last_trace = c->trace_id;
			st->last_flags = c->flags & (TCPINT_F_INHERITED |
						     TCPINT_F_PASSIVE);
			if (cls == TCPINT_SEG_ACK || cls == TCPINT_SEG_DATA)
				quiet_until_fin(skops);
		}
	}
}

static __always_inline void mark_closed(const struct tcpint_tuple *t)
{
	struct tcpint_tx_ctx *c = bpf_map_lookup_elem(&flow_context_map, t);
	struct tcpint_rx_ctx *rx = bpf_map_lookup_elem(&rx_context_map, t);
	__u64 now = bpf_ktime_get_ns();

	if (c)
		c->closed_ns = now;
	if (rx)
		rx->closed_ns = now;
}

SEC("sockops")
int tcpint_sockops(struct bpf_sock_ops *skops)
{
	struct tcpint_tuple t = {};
	struct tcpint_sk_state *st;
	struct tcpint_rx_ctx *rx;
	int op = (int)skops->op;

	switch (op) {
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		handle_hdr_opt_len(skops);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		handle_write_hdr_opt(skops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		if (tuple_from_skops(skops, &t))
			break;
		if (parse_option(skops, &t, 0) == 0) {
			struct tcphdr *th = skops->skb_data;

			if ((void *)(th + 1) <= skops->skb_data_end && th->fin) {
				rx = bpf_map_lookup_elem(&rx_context_map, &t);
				if (rx)
					rx->flags |= TCPINT_F_FIN;
			}
		}
		break;
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Process context of connect(): who opens the flow. */
		if (tuple_from_skops(skops, &t) || !flow_selected(&t))
			break;
		create_tx(&t, true, true);
		st = sk_state_get(skops, true);
		if (st) {
			st->active = 1;
			st->pending_ack = 0;
		}
		enable_hdr_cbs(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		if (tuple_from_skops(skops, &t) || !flow_selected(&t))
			break;
		/* skb is the SYN-ACK. */
		parse_option(skops, &t, 0);
		if (!bpf_map_lookup_elem(&flow_context_map, &t))
			create_tx(&t, true, false); /* connected before load */
		st = sk_state_get(skops, true);
		if (st) {
			st->active = 1;
			/* Carry the context on the handshake ACK too: the
			 * passive side cannot read our SYN when it answered
			 * with a syncookie (no saved SYN). */
			st->pending_ack = 1;
		}
		enable_hdr_cbs(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (tuple_from_skops(skops, &t) || !flow_selected(&t))
			break;
		/* skb is the ACK completing the handshake (or the SYN itself
		 * with fast open); fall back to the saved SYN, if the
		 * listener kept one (TCP_SAVE_SYN). */
		if (parse_option(skops, &t, 0) == -ENOMSG)
			parse_option(skops, &t, BPF_LOAD_HDR_OPT_TCP_SYN);
		create_tx(&t, false, false);
		st = sk_state_get(skops, true);
		if (st) {
			st->active = 0;
			st->pending_ack = 0;
		}
		enable_hdr_cbs(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* tcp_close_state() sets FIN_WAIT1 / LAST_ACK before the FIN
		 * is sent: a quiet socket asks for option callbacks again. */
		if (quiet_mode() && (segments & TCPINT_SEG_FIN) &&
		    (skops->args[1] == TCP_FIN_WAIT1 || skops->args[1] == TCP_LAST_ACK))
			set_write_cb(skops, true);
		if (skops->args[1] == TCP_CLOSE && !tuple_from_skops(skops, &t))
			mark_closed(&t);
		break;
	}
	return 1; /* never veto: other programs on the cgroup decide too */
}

/* --------------------------------------------------------- syscall side */

/* The canonical tuple of a TCP socket, from its fields as read by the
 * caller's walk (direct loads or bpf_probe_read_kernel). */
static __always_inline bool tcp_tuple_of(__u16 family, __u32 saddr4,
					 __u32 daddr4, const __u32 *l6,
					 const __u32 *r6, __u16 num,
					 __u16 dport_be, struct tcpint_tuple *t)
{
	if (family == AF_INET) {
		set_addr(t->local_addr, 0, 0, bpf_htonl(0x0000ffff), saddr4);
		set_addr(t->remote_addr, 0, 0, bpf_htonl(0x0000ffff), daddr4);
	} else if (family == AF_INET6) {
		set_addr(t->local_addr, l6[0], l6[1], l6[2], l6[3]);
		set_addr(t->remote_addr, r6[0], r6[1], r6[2], r6[3]);
	} else {
		return false;
	}
	t->family = family;
	t->local_port = num;
	t->remote_port = bpf_ntohs(dport_be);
	canonicalize(t);
	return true;
}

/* (current task, fd) -> canonical tuple of a TCP socket; true when found.
 * Runs for every traced socket syscall, so it avoids helper calls: the fd
 * walk is bpfmgr_current_fd_sock() (direct BTF loads, bpf_rdonly_cast). */
static __always_inline bool fd_tuple_direct(int fd, struct tcpint_tuple *t)
{
	struct sock *sk;

	if (fd < 0)
		return false;
	sk = bpfmgr_current_fd_sock((__u32)fd);
	if (!sk || sk->sk_protocol != IPPROTO_TCP_NR)
		return false;
	return tcp_tuple_of(sk->__sk_common.skc_family,
			    sk->__sk_common.skc_rcv_saddr,
			    sk->__sk_common.skc_daddr,
			    sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32,
			    sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32,
			    sk->__sk_common.skc_num, sk->__sk_common.skc_dport, t);
}

/* The same walk for kernels without bpf_rdonly_cast: every pointer is a
 * scalar read through bpf_probe_read_kernel (BPF_CORE_READ), the classic
 * libbpf-tools form, which relies on no verifier pointer tracking. */
static __always_inline bool fd_tuple_probe(int fd, struct tcpint_tuple *t)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **arr, *f = NULL;
	struct sock_common skc;
	struct socket *sock;
	struct sock *sk;
	__u32 l6[4] = {}, r6[4] = {};
	umode_t mode;

	if (fd < 0 || !fdt || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return false;
	arr = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &arr[fd]) || !f)
		return false;
	mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & BPFMGR_S_IFMT) != BPFMGR_S_IFSOCK)
		return false;
	sock = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP_NR)
		return false;
	/* the IPv4 part of sock_common in one read (addresses, ports,
	 * family are its first fields) */
	if (bpf_probe_read_kernel(&skc, bpf_core_field_offset(struct sock_common,
							     skc_state),
				  &sk->__sk_common))
		return false;
	if (skc.skc_family == AF_INET6) {
		BPF_CORE_READ_INTO(&l6, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32);
		BPF_CORE_READ_INTO(&r6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32);
	}
	return tcp_tuple_of(skc.skc_family, skc.skc_rcv_saddr, skc.skc_daddr,
			    l6, r6, skc.skc_num, skc.skc_dport, t);
}

static __always_inline bool same_tuple(const struct tcpint_tuple *a,
				       const struct tcpint_tuple *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 diff = 0;
	int i;

	for (i = 0; i < (int)(sizeof(*a) / 4); i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

/* Bytes of a msghdr's first iovecs (user memory); best effort. */
static __always_inline __u64 iov_bytes(const struct iovec *iov, __u64 n)
{
	__u64 total = 0;
	int i;

	for (i = 0; i < 8; i++) {
		struct iovec v;

		if (i >= n)
			break;
		if (bpf_probe_read_user(&v, sizeof(v), &iov[i]))
			break;
		total += v.iov_len;
	}
	return total;
}

/* The syscall's first three arguments, as the variant reads them. */
struct sys_args {
	__u64 a1, a2, a3;
};

static __always_inline void read_args(struct bpf_raw_tracepoint_args *ctx,
				      long nr, bool direct, struct sys_args *a)
{
	const bpfmgr_sys_regs *regs;
	bool need2 = nr == BPFMGR_NR_writev || nr == BPFMGR_NR_sendmsg;
	bool need3 = nr == BPFMGR_NR_write || nr == BPFMGR_NR_sendto ||
		     nr == BPFMGR_NR_writev || nr == BPFMGR_NR_sendmmsg;

	if (direct) {
		/* direct loads instead of a bpf_probe_read_kernel per
		 * register */
		regs = (const bpfmgr_sys_regs *)bpfmgr_cast((void *)ctx->args[0],
							    struct pt_regs);
		a->a1 = BPFMGR_SYS_ARG1(regs);
		a->a2 = need2 ? BPFMGR_SYS_ARG2(regs) : 0;
		a->a3 = need3 ? BPFMGR_SYS_ARG3(regs) : 0;
		return;
	}
	regs = (const bpfmgr_sys_regs *)ctx->args[0];
	a->a1 = a->a2 = a->a3 = 0;
	bpf_core_read(&a->a1, sizeof(a->a1), &BPFMGR_SYS_ARG1(regs));
	if (need2)
		bpf_core_read(&a->a2, sizeof(a->a2), &BPFMGR_SYS_ARG2(regs));
	if (need3)
		bpf_core_read(&a->a3, sizeof(a->a3), &BPFMGR_SYS_ARG3(regs));
}

/* Both sys_enter variants; `direct` is a compile-time constant, so each
 * program holds only its own walk (no kfunc call in the probe variant). */
static __always_inline int sys_enter_common(struct bpf_raw_tracepoint_args *ctx,
					    const bool direct)
{
	long nr = (long)ctx->args[1];
	struct sys_args args;
	struct tcpint_tuple t = {};
	struct tcpint_tx_ctx *c;
	bool send, found;
	__u64 id, bytes = 0, msgs = 1;
	__u32 trace;

	switch (nr) {
	case BPFMGR_NR_write:
	case BPFMGR_NR_writev:
	case BPFMGR_NR_sendto:
	case BPFMGR_NR_sendmsg:
	case BPFMGR_NR_sendmmsg:
		send = true;
		break;
	case BPFMGR_NR_read:
	case BPFMGR_NR_readv:
	case BPFMGR_NR_recvfrom:
	case BPFMGR_NR_recvmsg:
	case BPFMGR_NR_recvmmsg:
		if (!propagate)
			return 0;
		send = false;
		break;
	default:
		return 0;
	}
	if (cgroup_level &&
	    bpf_get_current_ancestor_cgroup_id(cgroup_level) != cgroup_id)
		return 0;

	read_args(ctx, nr, direct, &args);
	found = direct ? fd_tuple_direct((int)args.a1, &t)
		       : fd_tuple_probe((int)args.a1, &t);
	if (!found)
		return 0;
	id = bpf_get_current_pid_tgid();
	if (!send) {
		struct tcpint_thread_ctx th;
		__u32 tid = (__u32)id;

		struct tcpint_thread_ctx *old;
		struct tcpint_rx_ctx *rx;

		rx = bpf_map_lookup_elem(&rx_context_map, &t);
		if (!rx)
			return 0;
		/* Same flow and trace as last time (the common case: a thread
		 * serving one connection): no LRU update. */
		old = bpf_map_lookup_elem(&thread_map, &tid);
		if (old && old->trace_id == rx->trace_id &&
		    same_tuple(&old->last_rx, &t))
			return 0;
		th.last_rx = t;
		th.trace_id = rx->trace_id;
		th.pad = 0;
		bpf_map_update_elem(&thread_map, &tid, &th, BPF_ANY);
		return 0;
	}

	c = bpf_map_lookup_elem(&flow_context_map, &t);
	if (!c)
		return 0;
	switch (nr) {
	case BPFMGR_NR_write:
	case BPFMGR_NR_sendto:
		bytes = args.a3;
		break;
	case BPFMGR_NR_writev:
		bytes = iov_bytes((const struct iovec *)args.a2, args.a3);
		break;
	case BPFMGR_NR_sendmsg: {
		struct user_msghdr m;

		if (!bpf_probe_read_user(&m, sizeof(m), (void *)args.a2))
			bytes = iov_bytes(m.msg_iov, m.msg_iovlen);
		break;
	}
	case BPFMGR_NR_sendmmsg:
		msgs = args.a3; /* vlen; bytes not counted */
		break;
	}
	__sync_fetch_and_add(&c->msg_count, (__u32)msgs);
	__sync_fetch_and_add(&c->bytes, bytes);
	c->last_send_ns = bpf_ktime_get_ns();
	if (c->tid != (__u32)id) {
		c->pid = id >> 32;
		c->tid = (__u32)id;
		bpf_get_current_comm(c->comm, sizeof(c->comm));
	}
	if (propagate && inherited_trace((__u32)id, &t, &trace) &&
	    trace != c->trace_id) {
		c->trace_id = trace;
		c->flags |= TCPINT_F_INHERITED;
		__sync_fetch_and_add(&ctx_changes, 1);
		count(TCPINT_C_INHERITED);
	}
	count(TCPINT_C_SYSCALL_UPDATES);
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int tcpint_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	return sys_enter_common(ctx, true);
}

SEC("raw_tracepoint/sys_enter")
int tcpint_sys_enter_probe(struct bpf_raw_tracepoint_args *ctx)
{
	return sys_enter_common(ctx, false);
}

char LICENSE[] SEC("license") = "GPL";
