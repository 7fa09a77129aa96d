/* Counts program executions per command name, optionally for one uid. */
#include <bpfmgr/bpf_common.h>

#include "execcount.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct exec_key);
	__type(value, struct exec_stats);
} execs SEC(".maps");

const volatile __s64 only_uid = -1;

SEC("tracepoint/sched/sched_process_exec")
int count_exec(void *ctx)
{
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	if (only_uid >= 0 && uid != (__u32)only_uid)
		return 0;
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
	__sync_fetch_and_add(&s->execs, 1);
	s->last_pid = bpf_get_current_pid_tgid() >> 32;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
