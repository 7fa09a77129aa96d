/* Test plugin: counts getpid()/getppid() calls of one process through a
 * tracepoint, with a BTF-described map, a const volatile filter and an
 * optional hook on a tracepoint that does not exist. Variants built from this
 * file with -D flags exercise the core's failure paths. */
#include <bpfmgr/bpf_common.h>

struct call_stats {
	__u64 calls;
	__u64 last_pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct call_stats);
} stats SEC(".maps");

const volatile __u32 target_tgid = 0;

static __always_inline int count(__u32 slot)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (target_tgid && tgid != target_tgid)
		return 0;
	struct call_stats zero = {}, *s = bpf_map_lookup_elem(&stats, &slot);
	if (!s) {
		bpf_map_update_elem(&stats, &slot, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&stats, &slot);
		if (!s)
			return 0;
	}
	__sync_fetch_and_add(&s->calls, 1);
	s->last_pid = tgid;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
#if defined(TESTCOUNT_LONG_REJECT)
	/* A long straight path (the loop is unrolled) that ends in a read the
	 * verifier refuses: the log runs far past 8 KiB and the reason is its
	 * last line. */
	__u64 sum = 0;
#pragma unroll
	for (int i = 0; i < 400; i++)
		sum += bpf_get_prandom_u32() & i;
	return *(volatile __u64 *)(long)sum; /* a number is no pointer */
#elif defined(TESTCOUNT_VERIFIER_REJECT)
	/* Reads through a pointer the verifier knows may be NULL. */
	__u32 key = 0;
	struct call_stats *s = bpf_map_lookup_elem(&stats, &key);
	return s->calls;
#else
	return count(0);
#endif
}

/* Optional: no such tracepoint exists, the core must carry on. */
SEC("tracepoint/bpfmgr_test/no_such_event")
int optional_missing(void *ctx)
{
	return 0;
}

#ifdef TESTCOUNT_CGROUP
SEC("cgroup_skb/egress")
int egress(struct __sk_buff *skb)
{
	return 1;
}
#endif

char LICENSE[] SEC("license") = "GPL";
