/* probes: the kernel/user contract, written once.
 *
 * Included by probes.bpf.c (after vmlinux.h) and by the C++ side (which
 * static_asserts the sizes below). Fixed-width types only; every struct is
 * 8-byte aligned with explicit padding so clang -target bpf and the host
 * compiler agree on the layout. Addresses are 16 bytes plus a family:
 * AF_INET uses the first 4 bytes, AF_INET6 all 16 (v4-mapped stays
 * AF_INET6 with ::ffff:a.b.c.d). Ports are host byte order.
 */
#ifndef BPFMGR_PROBES_H
#define BPFMGR_PROBES_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define PROBES_COMM_LEN 16
#define PROBES_HIST_SLOTS 32 /* log2(ns) buckets: slot i holds [2^i, 2^(i+1)) */
#define PROBES_MAX_COMMS 8
#define PROBES_MAX_CGROUPS 8
#define PROBES_MMSG_MAX 32 /* sendmmsg/recvmmsg entries summed for bytes */

/* What a ring-buffer record is. */
enum probes_kind {
	PROBES_EV_CONNECT = 1,        /* client connection established */
	PROBES_EV_ACCEPT = 2,         /* server connection returned by accept() */
	PROBES_EV_CLOSE = 3,          /* connection reached TCP_CLOSE */
	PROBES_EV_CONNECT_FAILED = 4, /* SYN_SENT -> CLOSE (refused, timed out) */
	PROBES_EV_RETRANSMIT = 5,     /* tcp:tcp_retransmit_skb */
	PROBES_EV_RESET_SENT = 6,     /* tcp:tcp_send_reset */
	PROBES_EV_RESET_RECV = 7,     /* tcp:tcp_receive_reset */
	PROBES_EV_DROP = 8,           /* skb:kfree_skb (reason = skb_drop_reason) */
	PROBES_EV_RCVQ_FULL = 9,      /* sock:sock_rcvqueue_full */
	PROBES_EV_SYSCALL = 10,       /* one traced syscall (option syscall_events) */
	PROBES_EV_KIND_MAX = 11,
};

/* Bits of the `kinds` global: which event kinds are on. */
enum probes_kind_bit {
	PROBES_K_CONNECT = 1u << 0,
	PROBES_K_ACCEPT = 1u << 1,
	PROBES_K_CLOSE = 1u << 2,
	PROBES_K_RETRANSMIT = 1u << 3,
	PROBES_K_RESET = 1u << 4,
	PROBES_K_DROP = 1u << 5,
	PROBES_K_RCVQ_FULL = 1u << 6,
	PROBES_K_SYSCALLS = 1u << 7,
};

/* The ten traced syscalls, in this order everywhere (options, maps, JSON). */
enum probes_op {
	PROBES_OP_READ = 0,
	PROBES_OP_READV,
	PROBES_OP_RECVFROM,
	PROBES_OP_RECVMSG,
	PROBES_OP_RECVMMSG,
	PROBES_OP_WRITE,
	PROBES_OP_WRITEV,
	PROBES_OP_SENDTO,
	PROBES_OP_SENDMSG,
	PROBES_OP_SENDMMSG,
	PROBES_OP_MAX,
};

/* Who sent the first FIN. */
enum probes_closer {
	PROBES_CLOSER_UNKNOWN = 0,
	PROBES_CLOSER_LOCAL = 1,  /* ESTABLISHED -> FIN_WAIT1 */
	PROBES_CLOSER_REMOTE = 2, /* ESTABLISHED -> CLOSE_WAIT */
	PROBES_CLOSER_BOTH = 3,   /* simultaneous close (FIN_WAIT1 -> CLOSING) */
	PROBES_CLOSER_RESET = 4,  /* ESTABLISHED/CLOSE_WAIT -> CLOSE: reset/abort */
};

enum probes_role {
	PROBES_ROLE_CLIENT = 1,
	PROBES_ROLE_SERVER = 2,
};

struct probes_tuple {
	__u8 saddr[16]; /* source; the local end for connection events */
	__u8 daddr[16]; /* destination; the remote end for connection events */
	__u16 sport;
	__u16 dport;
	__u16 family; /* AF_INET / AF_INET6, 0 when unknown */
	__u16 proto;  /* IPPROTO_* */
};

/* One ring-buffer record; every kind uses the same layout (152 bytes). */
struct probes_event {
	__u64 ts_ns;          /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cgroup_id;      /* cgroup v2 id of the owner */
	__u64 sock_ino;       /* socket inode (socket:[N]) when known, else 0 */
	__u64 bytes_sent;     /* close: payload sent (bytes_sent - bytes_retrans);
	                         syscall: bytes written */
	__u64 bytes_received; /* close: payload received (bytes_received less
	                         the FIN); syscall: bytes read */
	__u64 duration_ns;    /* close: lifetime; connect/accept: handshake;
	                         syscall: latency */
	__s64 ret;            /* syscall: return value; retransmit: err */
	__u32 kind;           /* enum probes_kind */
	__u32 pid;            /* tgid of the owner (0: unknown, e.g. softirq) */
	__u32 tid;
	__u32 cpu;
	char comm[PROBES_COMM_LEN];
	struct probes_tuple t;
	__u32 reason;     /* drop: skb_drop_reason; reset sent: sk_rst_reason */
	__u32 fd;         /* accept / syscall: file descriptor */
	__u32 rmem_alloc; /* rcvq_full: queued bytes */
	__u32 rcvbuf;     /* rcvq_full: sk_rcvbuf */
	__u8 state;       /* TCP state at the event (close: the state before) */
	__u8 closer;      /* close: enum probes_closer */
	__u8 op;          /* syscall: enum probes_op */
	__u8 role;        /* connection events: enum probes_role */
	__u32 _pad;
};

/* Connection table: one entry per TCP socket from SYN_SENT (client) or
 * SYN_RECV -> ESTABLISHED (server) to TCP_CLOSE. Key: the kernel's struct
 * sock address (only the BPF side dereferences it). */
struct probes_conn_key {
	__u64 skaddr;
};

struct probes_conn {
	__u64 start_ns;       /* SYN_SENT (client) / ESTABLISHED (server) */
	__u64 established_ns; /* ESTABLISHED */
	__u64 cgroup_id;
	__u64 sock_ino;
	struct probes_tuple t; /* as of ESTABLISHED */
	__u32 pid;             /* owner: connect()ing or accept()ing process */
	__u32 tid;
	char comm[PROBES_COMM_LEN];
	__u8 role;   /* enum probes_role */
	__u8 closer; /* enum probes_closer */
	__u8 owned;  /* 1 once the owner is known (client: always) */
	__u8 _pad[5];
};

/* Syscall tracer aggregates: per process, syscall and socket (see
 * syscall_stats in probes.bpf.c: per-CPU open-addressed table). */
struct probes_sys_key {
	__u32 tgid;
	__u32 op;       /* enum probes_op */
	__u64 sock_ino; /* socket inode; for non-sockets (sockets_only=false) the
	                   file's inode */
};

struct probes_sys_stats {
	__u64 calls;
	__u64 bytes;       /* sum of positive returns (mmsg: sum of msg_len) */
	__u64 errors;      /* negative returns */
	__u64 timed_calls; /* calls with a latency sample (all, unless the
	                      latency_sample_every option is above 1) */
	__u64 total_ns;    /* sum of sampled latencies */
	__u64 hist[PROBES_HIST_SLOTS]; /* sampled latency, log2(ns) buckets */
	char comm[PROBES_COMM_LEN];
};

/* One slot of the syscall_stats table (tgid 0: free). */
struct probes_sys_slot {
	struct probes_sys_key key;
	struct probes_sys_stats s;
};

#define PROBES_SYS_PROBE 4 /* slots probed per key */

/* Per-thread state between sys_enter and sys_exit (task storage): the
 * timestamp of a call whose latency is measured. */
struct probes_inflight {
	__u64 ts; /* 0: nothing in flight */
	__u32 fd;
	__u32 op;
};

/* Counters (per-CPU array, one entry). */
struct probes_counters {
	__u64 events_emitted;     /* ring-buffer records submitted */
	__u64 events_dropped;     /* ring buffer full: record lost, counted */
	__u64 _unused0;           /* (calls are summed from syscall_stats) */
	__u64 sys_stats_full;     /* syscall_stats map full: call not recorded */
	__u64 conns_full;         /* conns map full: connection not tracked */
	__u64 inflight_nomem;     /* task storage allocation failed */
	__u64 mmsg_truncated;     /* mmsg calls with more than PROBES_MMSG_MAX */
	__u64 _reserved;
};

#endif /* BPFMGR_PROBES_H */
