/* Common includes and small helpers for bpfmgr BPF programs (CO-RE). */
#ifndef BPFMGR_BPF_COMMON_H
#define BPFMGR_BPF_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Bump a per-CPU u64 counter slot of a BPF_MAP_TYPE_PERCPU_ARRAY. */
static __always_inline void bpfmgr_count(void *percpu_array, __u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(percpu_array, &slot);
	if (v)
		*v += 1;
}

static __always_inline void bpfmgr_add(void *percpu_array, __u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(percpu_array, &slot);
	if (v)
		*v += n;
}

#endif
