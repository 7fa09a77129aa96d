/* Per-CPU event counters for bpfmgr BPF programs.
 *
 * A plugin keeps its counters as one struct of __u64 fields (shared with its
 * C++ side, which sums them per CPU with bpfmgr::read_percpu) in a
 * one-entry BPF_MAP_TYPE_PERCPU_ARRAY:
 *
 *	BPFMGR_COUNTERS_MAP(counters, struct probes_counters);
 *	...
 *	BPFMGR_COUNT(counters, events_dropped);
 *	BPFMGR_COUNT_ADD(counters, bytes_seen, len);
 *
 * Per CPU, so no atomics; the array lookup is inlined by the verifier. The
 * value type comes from the map's own declaration, so a field that the
 * struct lacks is a compile error, not a silent miss.
 */
#ifndef BPFMGR_COUNTERS_BPF_H
#define BPFMGR_COUNTERS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define BPFMGR_COUNTERS_MAP(name, value_type)          \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); \
		__uint(max_entries, 1);                \
		__type(key, __u32);                    \
		__type(value, value_type);             \
	} name SEC(".maps")

/* This CPU's counters struct of `map`, or NULL (never, for a one-entry
 * array, but the verifier wants the check). */
#define BPFMGR_COUNTERS(map)                                             \
	({                                                               \
		__u32 bpfmgr_zero_ = 0;                                  \
		(__typeof__(*(map).value) *)bpf_map_lookup_elem(&(map),  \
								&bpfmgr_zero_); \
	})

#define BPFMGR_COUNT_ADD(map, field, n)                               \
	do {                                                          \
		__typeof__(*(map).value) *bpfmgr_c_ = BPFMGR_COUNTERS(map); \
		if (bpfmgr_c_)                                        \
			bpfmgr_c_->field += (n);                      \
	} while (0)

#define BPFMGR_COUNT(map, field) BPFMGR_COUNT_ADD(map, field, 1)

#endif
