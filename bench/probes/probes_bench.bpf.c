// SPDX-License-Identifier: GPL-2.0
/* probes_bench: what bench/probes measures the probes plugin against, in
 * an object of its own so the shipped plugin carries none of it.
 *
 *   bench_empty_enter/exit  raw_tp/sys_enter, raw_tp/sys_exit: empty, the
 *                           cost of the hooks themselves (baseline of the
 *                           syscall tracer, which runs on the same hooks)
 *   bench_burst             syscalls/sys_exit_write of one process: submits
 *                           `burst` probes records per call through the
 *                           plugin's own ring code, to load `bpfmgr events`
 *                           past what one CPU's syscalls produce
 */
#include <bpfmgr/bpf_common.h>
#include <bpfmgr/counters.bpf.h>

#include "probes.h"
#include "probes_ring.bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 burst_tgid = 0;
const volatile __u32 burst = 1;
#define BENCH_MAX_BURST 64

SEC("raw_tp/sys_enter")
int bench_empty_enter(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int bench_empty_exit(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

struct sys_exit_args {
	__u64 common;
	int nr;
	long ret;
};

SEC("tracepoint/syscalls/sys_exit_write")
int bench_burst(struct sys_exit_args *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != burst_tgid)
		return 0;
	char comm[PROBES_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	for (__u32 i = 0; i < BENCH_MAX_BURST; i++) {
		if (i >= burst)
			break;
		struct probes_event *e = ev_reserve(PROBES_EV_SYSCALL);
		if (!e)
			continue; /* counted as dropped */
		e->pid = id >> 32;
		e->tid = (__u32)id;
		__builtin_memcpy(e->comm, comm, sizeof(e->comm));
		e->cgroup_id = cgroup_id;
		e->op = PROBES_OP_WRITE;
		e->ret = ctx->ret;
		e->bytes_sent = ctx->ret > 0 ? ctx->ret : 0;
		ev_submit(e);
	}
	return 0;
}
