/* probes: the event ring buffer, its counters and its submit policy.
 *
 * Included by probes.bpf.c and by the benchmark's own object
 * (bench/probes/probes_bench.bpf.c), so that what the benchmark pushes
 * through `bpfmgr events` is submitted exactly as the plugin submits it.
 * After vmlinux.h, bpfmgr/counters.bpf.h and probes.h.
 */
#ifndef BPFMGR_PROBES_RING_BPF_H
#define BPFMGR_PROBES_RING_BPF_H

/* Wake the reader only once this many bytes wait in the ring (0: the
 * kernel's default, a wake-up whenever the reader has caught up, i.e. about
 * one per record at moderate rates). Readers consume on a poll timeout too,
 * so records below the mark are late by at most that timeout. */
const volatile __u64 wakeup_bytes = 0;
/* Bytes one record takes in the ring: 8-byte header + the record. */
#define PROBES_RECORD_SPAN (8 + sizeof(struct probes_event))

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* option ring_buffer_kb */
} events SEC(".maps");

BPFMGR_COUNTERS_MAP(counters, struct probes_counters);

#define COUNT(field) BPFMGR_COUNT(counters, field)

static __always_inline struct probes_event *ev_reserve(__u32 kind)
{
	struct probes_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		COUNT(events_dropped);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	return e;
}

static __always_inline void ev_submit(struct probes_event *e)
{
	__u64 flags = 0;
	if (wakeup_bytes) {
		/* Wake only the record that takes the backlog across the mark:
		 * a wake-up is an irq_work (a self-IPI, a VM exit here), and
		 * one per record above the mark cost ~3 us each. The reader
		 * drains the ring before it sleeps again, so the next batch
		 * crosses the mark from below. */
		__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		flags = avail >= wakeup_bytes && avail < wakeup_bytes + PROBES_RECORD_SPAN
				? BPF_RB_FORCE_WAKEUP
				: BPF_RB_NO_WAKEUP;
	}
	bpf_ringbuf_submit(e, flags);
	COUNT(events_emitted);
}

#endif
