/* Counts the signals the kernel generates, per signal number, on the
 * signal:signal_generate tracepoint (every kill(), tgkill(), fault, timer,
 * child exit, ...). */
#include <bpfmgr/bpf_common.h>
#include "sigcount.h"

/* One slot per signal number, one value per CPU (bpfmgr_count). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SIGCOUNT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} signals SEC(".maps");

/* Set in before_load. */
const volatile __s32 only_signal = 0; /* 0: every signal */
const volatile bool only_delivered = false;

SEC("tracepoint/signal/signal_generate")
int count_signal(struct trace_event_raw_signal_generate *ctx)
{
	int sig = ctx->sig;

	if (sig <= 0 || sig >= SIGCOUNT_SLOTS)
		return 0;
	if (only_signal && sig != only_signal)
		return 0;
	/* result 0 is TRACE_SIGNAL_DELIVERED: not ignored, blocked-and-queued
	 * counts too, but not a signal dropped as ignored or already pending */
	if (only_delivered && ctx->result != 0)
		return 0;
	bpfmgr_count(&signals, sig);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
