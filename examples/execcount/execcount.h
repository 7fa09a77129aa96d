/* Shared by the BPF program and the plugin: map keys and values, the
 * ring-buffer record and the counter slots. Fixed-size types only, so both
 * compilers lay them out the same way. */
#ifndef EXECCOUNT_H
#define EXECCOUNT_H

#define EXECCOUNT_COMM_LEN 16

/* Map `execs`: executions per command name. */
struct exec_key {
	char comm[EXECCOUNT_COMM_LEN];
};

struct exec_stats {
	__u64 execs;
	__u64 last_pid;
};

/* Ring buffer `events`: one record per counted execution. */
struct exec_event {
	__u64 time_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 pid;
	__u32 uid;
	char comm[EXECCOUNT_COMM_LEN];
};

/* Slots of the per-CPU array `totals` (bpfmgr_count()). */
enum execcount_slot {
	EXECCOUNT_SEEN,           /* every exec the tracepoint saw */
	EXECCOUNT_COUNTED,        /* passed the uid filter */
	EXECCOUNT_EVENTS_DROPPED, /* ring buffer full: no record */
	EXECCOUNT_SLOTS,
};

#endif
