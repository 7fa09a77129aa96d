/* Counts program executions per command name, optionally for one uid, and
 * streams one record per execution to user space. */
#include <bpfmgr/bpf_common.h>

#include "execcount.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct exec_key);
	__type(value, struct exec_stats);
} execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EXECCOUNT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

/* Sized by the plugin (option ring_buffer_kb) before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Set by the plugin in before_load (options uid, events). */
const volatile __s64 only_uid = -1;
const volatile bool send_events = true;

SEC("tracepoint/sched/sched_process_exec")
int count_exec(void *ctx)
{
	bpfmgr_count(&totals, EXECCOUNT_SEEN);
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	if (only_uid >= 0 && uid != (__u32)only_uid)
		return 0;
	bpfmgr_count(&totals, EXECCOUNT_COUNTED);

	struct exec_key key = {};
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	struct exec_stats *s = bpf_map_lookup_elem(&execs, &key);
	if (!s) {
		struct exec_stats init = {};
		bpf_map_update_elem(&execs, &key, &init, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&execs, &key);
		if (!s)
			return 0;
	}
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__sync_fetch_and_add(&s->execs, 1);
	s->last_pid = pid;

	if (!send_events)
		return 0;
	struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		bpfmgr_count(&totals, EXECCOUNT_EVENTS_DROPPED);
		return 0;
	}
	e->time_ns = bpf_ktime_get_ns();
	e->pid = pid;
	e->uid = uid;
	__builtin_memcpy(e->comm, key.comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
