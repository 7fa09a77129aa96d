/* tcpint: in-band flow context carried in a TCP header option.
 *
 * The one contract between the BPF side (tcpint.bpf.c) and user space
 * (plugin, tests, bench, anyone dumping the pinned maps). Fixed-width types
 * only; the wire struct is packed and big-endian, map structs are host-order
 * and naturally aligned (checked with static_assert on the C++ side).
 *
 * Wire format (RFC 6994 experimental option, 20 bytes, see docs/tcpint.md):
 *
 *   off size field
 *     0    1 kind        253 or 254 (option `option_kind`)
 *     1    1 len         20
 *     2    2 exid        ExID / magic (option `exid`), big-endian
 *     4    1 version     TCPINT_VERSION (1); receivers reject any other
 *     5    1 flags       TCPINT_F_*
 *     6    2 sender_id   sending host's id (option `sender_id`), big-endian
 *     8    4 trace_id    flow's trace id, big-endian
 *    12    4 msg_count   send syscalls seen on this flow so far, big-endian
 *    16    4 send_ts_us  CLOCK_TAI in microseconds (low 32 bits) when the
 *                        segment was built, big-endian
 */
#ifndef BPFMGR_TCPINT_H
#define BPFMGR_TCPINT_H

#ifdef __cplusplus
#include <cstdint>
#define TCPINT_U8 std::uint8_t
#define TCPINT_U16 std::uint16_t
#define TCPINT_U32 std::uint32_t
#define TCPINT_U64 std::uint64_t
#else
#define TCPINT_U8 __u8
#define TCPINT_U16 __u16
#define TCPINT_U32 __u32
#define TCPINT_U64 __u64
#endif

#define TCPINT_VERSION 1
#define TCPINT_OPT_LEN 20
#define TCPINT_DEFAULT_KIND 254
#define TCPINT_DEFAULT_EXID 0x5449 /* "TI" */
#define TCPINT_TFO_EXID 0xF989     /* taken by TCP Fast Open (RFC 7413) */

/* flags byte of the option (and of the stored contexts) */
#define TCPINT_F_SYN 0x01       /* written on a SYN or SYN-ACK */
#define TCPINT_F_FIN 0x02       /* written on a FIN */
#define TCPINT_F_INHERITED 0x04 /* trace id taken over from a received flow */
#define TCPINT_F_PASSIVE 0x08   /* sender is the passive (accepting) side */

/* segments the writer puts the option on (`segments` option, bit mask) */
#define TCPINT_SEG_SYN 0x01  /* SYN (and SYN-ACK of fast-open children) */
#define TCPINT_SEG_ACK 0x02  /* the ACK completing the 3-way handshake */
#define TCPINT_SEG_DATA 0x04 /* every data segment, retransmits included */
#define TCPINT_SEG_FIN 0x08  /* FIN segments */
/* data segments only when the context on the wire (trace id, flags) differs
 * from the last option this socket wrote; ignored when TCPINT_SEG_DATA is
 * set. Keeps most segments untouched (no option written, none parsed, the
 * receiver stays on TCP's fast path); msg_count then reaches the peer only
 * with changes and on the FIN. */
#define TCPINT_SEG_DATA_CHANGED 0x10

/* The option as it is on the wire. */
struct tcpint_opt {
	TCPINT_U8 kind;
	TCPINT_U8 len;
	TCPINT_U16 exid;      /* big-endian */
	TCPINT_U8 version;
	TCPINT_U8 flags;
	TCPINT_U16 sender_id; /* big-endian */
	TCPINT_U32 trace_id;  /* big-endian */
	TCPINT_U32 msg_count; /* big-endian */
	TCPINT_U32 send_ts_us;/* big-endian */
} __attribute__((packed));

/* Flow key, always from the point of view of the host that stores it
 * (local = this host). Addresses are 16 bytes; IPv4 and IPv4-mapped IPv6
 * sockets are both stored as ::ffff:a.b.c.d with family AF_INET, so a
 * dual-stack socket and a plain IPv4 socket of the same flow share a key.
 * Ports are host byte order. */
struct tcpint_tuple {
	TCPINT_U8 local_addr[16];
	TCPINT_U8 remote_addr[16];
	TCPINT_U16 local_port;
	TCPINT_U16 remote_port;
	TCPINT_U16 family; /* 2 = AF_INET (incl. v4-mapped), 10 = AF_INET6 */
	TCPINT_U16 pad;
} __attribute__((aligned(4)));

/* flow_context_map value: what this host sends on a flow. Created by
 * sock_ops at connect / established, kept current by the syscall hooks. */
struct tcpint_tx_ctx {
	TCPINT_U64 created_ns;    /* CLOCK_MONOTONIC */
	TCPINT_U64 last_send_ns;  /* last send syscall, CLOCK_MONOTONIC */
	TCPINT_U64 bytes;         /* bytes requested by send syscalls */
	TCPINT_U64 closed_ns;     /* 0 while the socket is open */
	TCPINT_U32 trace_id;
	TCPINT_U32 msg_count;     /* send syscalls (sendmmsg counts vlen) */
	TCPINT_U32 pid;           /* tgid of the last sender (0: unknown) */
	TCPINT_U32 tid;           /* thread of the last sender */
	char comm[16];            /* last sender's comm */
	TCPINT_U16 sender_id;
	TCPINT_U8 flags;          /* TCPINT_F_* */
	TCPINT_U8 pad[5];
};

/* rx_context_map value: the peer's context as last received on a flow. */
struct tcpint_rx_ctx {
	TCPINT_U64 first_seen_ns; /* CLOCK_MONOTONIC of this host */
	TCPINT_U64 last_seen_ns;
	TCPINT_U64 options;       /* options parsed on this flow */
	TCPINT_U64 closed_ns;     /* 0 while the socket is open */
	TCPINT_U32 trace_id;
	TCPINT_U32 msg_count;
	TCPINT_U32 send_ts_us;
	TCPINT_U16 sender_id;
	TCPINT_U8 version;
	TCPINT_U8 flags;          /* flags of the last option, | FIN once seen */
};

/* Per-socket state in sk storage, private to sock_ops. */
struct tcpint_sk_state {
	TCPINT_U8 pending_ack; /* write on the next pure ACK (handshake) */
	TCPINT_U8 active;      /* 1: this side connected */
	TCPINT_U8 written;     /* 1: an option went out on this socket */
	TCPINT_U8 last_flags;  /* context flags of the last option written */
	TCPINT_U32 last_trace; /* trace id of the last option written */
	TCPINT_U32 seen_changes; /* ctx_changes when this socket last found
				    its context unchanged (data_changed) */
	TCPINT_U32 pad;
};

/* Last process that received on a tracked socket, per thread: used to give
 * a new outgoing flow the trace id of the flow its thread is serving. */
struct tcpint_thread_ctx {
	struct tcpint_tuple last_rx; /* tuple of the last received-on socket */
	TCPINT_U32 trace_id;         /* that flow's received trace id when the
					thread read from it */
	TCPINT_U32 pad;
};

/* Slots of the per-CPU `counters` array. */
enum tcpint_counter {
	TCPINT_C_WRITTEN = 0,     /* options stored on outgoing segments */
	TCPINT_C_PARSED,          /* valid options parsed */
	TCPINT_C_REJECTED_MAGIC,  /* our kind, another ExID */
	TCPINT_C_REJECTED_LEN,    /* our kind + ExID, wrong length/version */
	TCPINT_C_NO_ROOM,         /* segment had no room left for the option */
	TCPINT_C_TX_FLOWS,        /* tx contexts created */
	TCPINT_C_RX_FLOWS,        /* rx contexts created */
	TCPINT_C_NO_CONTEXT,      /* room reserved but no context found */
	TCPINT_C_SYSCALL_UPDATES, /* send syscalls that updated a context */
	TCPINT_C_INHERITED,       /* trace ids taken over from a received flow */
	TCPINT_C_HELPER_ERRORS,   /* other helper failures (see helper_errors) */
	TCPINT_C_DEFERRED,        /* data_changed: a changed context waited for a
				     segment with room (this one was full) */
	TCPINT_C_MAX,
};

/* Key of `helper_errors`: which helper returned which errno. */
enum tcpint_helper {
	TCPINT_H_RESERVE = 1,
	TCPINT_H_STORE = 2,
	TCPINT_H_LOAD = 3,
	TCPINT_H_CB_FLAGS = 4,
	TCPINT_H_MAP_UPDATE = 5,
};
struct tcpint_helper_err {
	TCPINT_U32 helper; /* enum tcpint_helper */
	TCPINT_U32 err;    /* positive errno */
};

/* Key of the `cidr_filter` LPM trie; prefixlen counts bits of `addr`, IPv4
 * CIDRs are stored v4-mapped (prefixlen + 96). */
struct tcpint_cidr_key {
	TCPINT_U32 prefixlen;
	TCPINT_U8 addr[16];
};

#endif /* BPFMGR_TCPINT_H */
