/* Kernel-compatibility shims for bpfmgr BPF programs (CO-RE), in the spirit
 * of libbpf-tools' core_fixes.bpf.h.
 *
 * bpfmgr supports Debian 12's 6.1, the 6.12 LTS and current kernels (6.18).
 * Where what a program reads has a different shape on some of them, a shim
 * here reads whichever shape the running kernel has:
 *  - a field or type that comes and goes: bpf_core_field_exists /
 *    bpf_core_type_exists, which libbpf resolves at load; the verifier then
 *    drops the branch the kernel cannot run (no CO-RE failure);
 *  - types are local `___bpfmgr` flavours (libbpf ignores the suffix when
 *    matching), so the header compiles against any kernel's vmlinux.h, not
 *    only one that has every newer type;
 *  - what has no CO-RE form (a kfunc the kernel lacks) is a program variant
 *    the plugin picks at load (set_autoload), section "Direct loads".
 *
 * Layout, so that shims added on several branches merge cleanly: one
 * section per subsystem, each shim says which kernels have which shape, and
 * new shims go at the END of their section (new sections at the end of the
 * file). Keep a shim self-contained: its flavour types next to it.
 *
 * A field that is an enum in the kernel is a flavour of that enum locally
 * too: libbpf refuses to relocate an int onto an enum.
 */
#ifndef BPFMGR_COMPAT_BPF_H
#define BPFMGR_COMPAT_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* ======================================================== Direct loads
 * Memory reached through a pointer without a BTF type (an fd-table slot,
 * file->private_data, a raw tracepoint argument) is read either
 *  - directly: bpf_rdonly_cast() gives the pointer a type and each field is
 *    one load, fault-checked by the JIT (kfunc, Linux 6.2+), or
 *  - by copy: bpf_probe_read_kernel() per field (BPF_CORE_READ), any kernel.
 * A program is compiled for one of the two: pass BPFMGR_DIRECT or
 * BPFMGR_COPY as a constant to the inline helpers that take `direct`, and
 * build one program per mode; the plugin autoloads the one the kernel allows
 * (kernel feature: kfunc bpf_rdonly_cast). A pointer obtained by copy is a
 * plain number to the verifier: only BPFMGR_FIELD(BPFMGR_COPY, ...) may read
 * through it, never a helper that wants a kernel object. */
#define BPFMGR_DIRECT 1
#define BPFMGR_COPY 0

/* ptr->field (one direct load) or BPF_CORE_READ(ptr, field); `field` may be
 * a path (`__sk_common.skc_num`) or an array element (`regs[1]`). */
#define BPFMGR_FIELD(direct, ptr, field) \
	((direct) ? (ptr)->field : BPF_CORE_READ(ptr, field))

/* ===================================================== tcp tracepoints */

/* tcp:tcp_retransmit_skb. Up to 6.12 it is an event of the class
 * tcp_event_sk_skb (struct trace_event_raw_tcp_event_sk_skb); later kernels
 * give it its own struct with an `err` field (the tcp_retransmit_skb()
 * result). Both carry the socket's tuple. */
struct trace_event_raw_tcp_retransmit_skb___bpfmgr {
	const void *skaddr;
	int state;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
	int err;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_event_sk_skb___bpfmgr {
	const void *skaddr;
	int state;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __attribute__((preserve_access_index));

/* The socket tuple of tcp:tcp_retransmit_skb or of another tcp_event_sk_skb
 * event (tcp_send_reset up to 6.9), as the tracepoint recorded it. */
struct bpfmgr_tcp_tp_tuple {
	const void *skaddr;
	int state;
	int err; /* tcp_retransmit_skb's result where the kernel records it */
	__u16 family;
	__u16 sport; /* host order, as the tracepoints store them */
	__u16 dport;
	__u8 saddr[16]; /* 4 bytes for AF_INET */
	__u8 daddr[16];
};

/* Scalars are context loads at CO-RE-relocated offsets; the addresses are
 * copied with bpf_probe_read_kernel, because which ones to read depends on
 * the family and the verifier refuses a context load whose offset is chosen
 * at run time (the compiler may merge the two branches into one). */
#define BPFMGR_TCP_TP_TUPLE_READ(out, tp)                                 \
	do {                                                              \
		(out)->skaddr = (tp)->skaddr;                             \
		(out)->state = (tp)->state;                               \
		(out)->family = (tp)->family;                             \
		(out)->sport = (tp)->sport;                               \
		(out)->dport = (tp)->dport;                               \
		if ((out)->family == AF_INET) {                           \
			bpf_core_read((out)->saddr, 4, &(tp)->saddr);     \
			bpf_core_read((out)->daddr, 4, &(tp)->daddr);     \
		} else {                                                  \
			bpf_core_read((out)->saddr, 16, &(tp)->saddr_v6); \
			bpf_core_read((out)->daddr, 16, &(tp)->daddr_v6); \
		}                                                         \
	} while (0)

static __always_inline void
bpfmgr_tcp_retransmit_tuple(void *ctx, struct bpfmgr_tcp_tp_tuple *out)
{
	out->err = 0;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb___bpfmgr)) {
		struct trace_event_raw_tcp_retransmit_skb___bpfmgr *tp = ctx;
		BPFMGR_TCP_TP_TUPLE_READ(out, tp);
		if (bpf_core_field_exists(tp->err))
			out->err = tp->err;
	} else {
		struct trace_event_raw_tcp_event_sk_skb___bpfmgr *tp = ctx;
		BPFMGR_TCP_TP_TUPLE_READ(out, tp);
	}
}

/* tcp:tcp_send_reset. Up to 6.9 an event of the class tcp_event_sk_skb
 * (tuple fields, no reason; only resets sent on behalf of a full socket are
 * traced). Since 6.10 its own struct: the addresses as a sockaddr_in or
 * sockaddr_in6 (28 bytes each), `reason` (enum sk_rst_reason, 6.10+), and
 * resets without a socket (a closed port) are traced too. */
enum sk_rst_reason___bpfmgr { SK_RST_REASON_NOT_SPECIFIED___bpfmgr };

struct trace_event_raw_tcp_send_reset___bpfmgr {
	const void *skaddr;
	int state;
	enum sk_rst_reason___bpfmgr reason;
	__u8 saddr[28];
	__u8 daddr[28];
} __attribute__((preserve_access_index));

/* Whether tcp_send_reset records the reason (and traces resets without a
 * socket): a constant after load. */
static __always_inline bool bpfmgr_tcp_send_reset_has_reason(void)
{
	return bpf_core_type_exists(struct trace_event_raw_tcp_send_reset___bpfmgr);
}

static __always_inline void bpfmgr_sockaddr_to_tuple(const __u8 *sa, __u16 *family,
						     __u16 *port, __u8 *addr)
{
	__u16 fam = *(const __u16 *)sa;
	*family = fam;
	*port = bpf_ntohs(*(const __u16 *)(sa + 2));
	if (fam == AF_INET)
		__builtin_memcpy(addr, sa + 4, 4); /* sin_addr */
	else if (fam == AF_INET6)
		__builtin_memcpy(addr, sa + 8, 16); /* sin6_addr */
}

/* The tuple of a tcp_send_reset record; *reason is 0 where the kernel does
 * not record one. */
static __always_inline void
bpfmgr_tcp_send_reset_tuple(void *ctx, struct bpfmgr_tcp_tp_tuple *out, int *reason)
{
	out->err = 0;
	*reason = 0;
	if (bpfmgr_tcp_send_reset_has_reason()) {
		struct trace_event_raw_tcp_send_reset___bpfmgr *tp = ctx;
		__u8 sa[28], da[28];
		__u16 dfam = 0;
		out->skaddr = tp->skaddr;
		out->state = tp->state;
		*reason = tp->reason;
		bpf_core_read(sa, sizeof(sa), &tp->saddr);
		bpf_core_read(da, sizeof(da), &tp->daddr);
		bpfmgr_sockaddr_to_tuple(sa, &out->family, &out->sport, out->saddr);
		bpfmgr_sockaddr_to_tuple(da, &dfam, &out->dport, out->daddr);
	} else {
		struct trace_event_raw_tcp_event_sk_skb___bpfmgr *tp = ctx;
		BPFMGR_TCP_TP_TUPLE_READ(out, tp);
	}
}

/* ===================================================== skb tracepoints */

/* skb:kfree_skb. `rx_sk` (the receiving socket, when the drop happened on
 * the way in) since 6.12; `reason` since 5.17. */
enum skb_drop_reason___bpfmgr { SKB_NOT_DROPPED_YET___bpfmgr };

struct trace_event_raw_kfree_skb___bpfmgr {
	void *skbaddr;
	void *location;
	void *rx_sk;
	unsigned short protocol;
	enum skb_drop_reason___bpfmgr reason;
} __attribute__((preserve_access_index));

/* The socket a dropped skb belongs to: rx_sk where recorded, else skb->sk. */
static __always_inline struct sock *bpfmgr_kfree_skb_sock(void *ctx)
{
	struct trace_event_raw_kfree_skb___bpfmgr *tp = ctx;
	struct sock *sk = NULL;
	if (bpf_core_field_exists(tp->rx_sk))
		sk = tp->rx_sk;
	if (!sk)
		sk = BPF_CORE_READ((struct sk_buff *)tp->skbaddr, sk);
	return sk;
}

#endif
