/* Kernel functions (kfuncs) and BTF-pointer helpers for bpfmgr programs. */
#ifndef BPFMGR_KFUNCS_H
#define BPFMGR_KFUNCS_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

/* Treats `obj` as a read-only pointer to the kernel type `btf_id`, so its
 * fields are read with direct loads (fault-checked by the JIT) instead of a
 * bpf_probe_read_kernel call per field. Kernel >= 6.2 (tracing programs).
 * Weak: an object whose programs use it still opens and loads on 6.1, as
 * long as the programs that call it are not loaded there (a plugin declares
 * the kfunc as a kernel requirement or picks a variant without it: see
 * compat.bpf.h, "Direct loads"). */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/* bpfmgr_cast(ptr, struct file) -> const-free `struct file *` view of ptr. */
#define bpfmgr_cast(ptr, type) \
	((type *)bpf_rdonly_cast((const void *)(ptr), bpf_core_type_id_kernel(type)))

#endif
