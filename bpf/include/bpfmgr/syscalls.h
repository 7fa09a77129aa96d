/* Syscall numbers and arguments for raw_tp/sys_enter and raw_tp/sys_exit,
 * per target architecture (-D__TARGET_ARCH_x86 or -D__TARGET_ARCH_arm64,
 * as libbpf's bpf_tracing.h expects).
 *
 * sys_enter: ctx->args[0] is the task's struct pt_regs *, args[1] the
 * number. sys_exit: args[0] the pt_regs *, args[1] the return value; the
 * number is read from the registers (BPFMGR_SYSCALL_NR). Arguments are read
 * from the user registers saved at entry, which stay valid at exit
 * (x86-64: di, si, dx...; arm64: orig_x0 for the first, x0 being the
 * return value by then, x1.. for the rest). The registers are viewed as a
 * BTF pointer (bpf_rdonly_cast, 6.2+), so reads are direct loads, or read
 * by copy where the kfunc is missing (BPFMGR_*_AT); field offsets are CO-RE
 * relocated.
 */
#ifndef BPFMGR_SYSCALLS_H
#define BPFMGR_SYSCALLS_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "compat.bpf.h"
#include "kfuncs.h"

#if defined(__TARGET_ARCH_x86)
/* arch/x86/entry/syscalls/syscall_64.tbl */
#define BPFMGR_NR_read 0
#define BPFMGR_NR_write 1
#define BPFMGR_NR_readv 19
#define BPFMGR_NR_writev 20
#define BPFMGR_NR_sendto 44
#define BPFMGR_NR_recvfrom 45
#define BPFMGR_NR_sendmsg 46
#define BPFMGR_NR_recvmsg 47
#define BPFMGR_NR_recvmmsg 299
#define BPFMGR_NR_sendmmsg 307

struct pt_regs___bpfmgr_x86 {
	unsigned long di, si, dx, r10, orig_ax;
} __attribute__((preserve_access_index));
/* a macro, not a typedef: CO-RE relocations name the struct itself */
#define bpfmgr_sys_regs struct pt_regs___bpfmgr_x86
#define BPFMGR_SYS_ARG1_REG di
#define BPFMGR_SYS_ARG2_REG si
#define BPFMGR_SYS_ARG3_REG dx
#define BPFMGR_SYS_ARG4_REG r10
#define BPFMGR_SYSCALL_NR_REG orig_ax

#elif defined(__TARGET_ARCH_arm64)
/* include/uapi/asm-generic/unistd.h */
#define BPFMGR_NR_read 63
#define BPFMGR_NR_write 64
#define BPFMGR_NR_readv 65
#define BPFMGR_NR_writev 66
#define BPFMGR_NR_sendto 206
#define BPFMGR_NR_recvfrom 207
#define BPFMGR_NR_sendmsg 211
#define BPFMGR_NR_recvmsg 212
#define BPFMGR_NR_recvmmsg 243
#define BPFMGR_NR_sendmmsg 269

/* arch/arm64/include/asm/ptrace.h: regs[] sits in an anonymous struct of
 * an anonymous union; CO-RE matches members through those. */
struct pt_regs___bpfmgr_arm64 {
	__u64 regs[31];
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));
#define bpfmgr_sys_regs struct pt_regs___bpfmgr_arm64
#define BPFMGR_SYS_ARG1_REG orig_x0
#define BPFMGR_SYS_ARG2_REG regs[1]
#define BPFMGR_SYS_ARG3_REG regs[2]
#define BPFMGR_SYS_ARG4_REG regs[3]
#define BPFMGR_SYSCALL_NR_REG syscallno

#else
#error "bpfmgr/syscalls.h: define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif

/* Direct loads from a view of bpfmgr_sys_regs_of() (bpf_rdonly_cast). */
#define BPFMGR_SYS_ARG1(r) ((r)->BPFMGR_SYS_ARG1_REG)
#define BPFMGR_SYS_ARG2(r) ((r)->BPFMGR_SYS_ARG2_REG)
#define BPFMGR_SYS_ARG3(r) ((r)->BPFMGR_SYS_ARG3_REG)
#define BPFMGR_SYS_ARG4(r) ((r)->BPFMGR_SYS_ARG4_REG)
#define BPFMGR_SYSCALL_NR(r) ((long)(r)->BPFMGR_SYSCALL_NR_REG)

/* The same for a program built for BPFMGR_DIRECT or BPFMGR_COPY
 * (compat.bpf.h), from bpfmgr_sys_regs_at(ctx, direct). */
#define BPFMGR_SYS_ARG1_AT(direct, r) BPFMGR_FIELD(direct, r, BPFMGR_SYS_ARG1_REG)
#define BPFMGR_SYS_ARG2_AT(direct, r) BPFMGR_FIELD(direct, r, BPFMGR_SYS_ARG2_REG)
#define BPFMGR_SYS_ARG3_AT(direct, r) BPFMGR_FIELD(direct, r, BPFMGR_SYS_ARG3_REG)
#define BPFMGR_SYS_ARG4_AT(direct, r) BPFMGR_FIELD(direct, r, BPFMGR_SYS_ARG4_REG)
#define BPFMGR_SYSCALL_NR_AT(direct, r) \
	((long)BPFMGR_FIELD(direct, r, BPFMGR_SYSCALL_NR_REG))

/* The saved user registers of a raw_tp/sys_enter or sys_exit context:
 * with BPFMGR_DIRECT a typed view (kfunc bpf_rdonly_cast, 6.2+), with
 * BPFMGR_COPY the raw pointer, read by copy. */
static __always_inline bpfmgr_sys_regs *
bpfmgr_sys_regs_at(struct bpf_raw_tracepoint_args *ctx, const bool direct)
{
	if (!direct)
		return (bpfmgr_sys_regs *)ctx->args[0];
	return (bpfmgr_sys_regs *)bpfmgr_cast((void *)ctx->args[0], struct pt_regs);
}

static __always_inline const bpfmgr_sys_regs *
bpfmgr_sys_regs_of(struct bpf_raw_tracepoint_args *ctx)
{
	return bpfmgr_sys_regs_at(ctx, BPFMGR_DIRECT);
}

#endif
