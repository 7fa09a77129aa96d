/* (task, fd) -> struct file -> struct socket -> struct sock (the current
 * task from bpf_get_current_task_btf()), with direct BTF loads or, on
 * kernels without bpf_rdonly_cast, copies (compat.bpf.h, "Direct loads");
 * and address helpers. For tracing programs (raw_tp, tp, tp_btf, fentry). */
#ifndef BPFMGR_SOCKET_H
#define BPFMGR_SOCKET_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compat.bpf.h"
#include "kfuncs.h"

#ifndef BPFMGR_S_IFMT
#define BPFMGR_S_IFMT 00170000
#define BPFMGR_S_IFSOCK 0140000
#endif

/* The struct file behind `fd` in `task`'s table, or NULL. `task` has a BTF
 * type (bpf_get_current_task_btf()); `direct` is BPFMGR_DIRECT or
 * BPFMGR_COPY (compat.bpf.h), a constant: with BPFMGR_COPY the file pointer
 * returned is read only through BPFMGR_FIELD(BPFMGR_COPY, ...). */
static __always_inline struct file *bpfmgr_task_fd_file(struct task_struct *task, __u32 fd,
							const bool direct)
{
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	struct file **arr = fdt->fd;
	if (!direct) {
		struct file *f = NULL;
		bpf_probe_read_kernel(&f, sizeof(f), &arr[fd]);
		return f;
	}
	/* The slot is a `struct file *`, and so is the first member of struct
	 * kiocb: viewing the slot as a kiocb turns its variable-index read
	 * into a direct load instead of a bpf_probe_read_kernel call. */
	struct kiocb *slot = bpfmgr_cast(&arr[fd], struct kiocb);
	return slot->ki_filp;
}

static __always_inline bool bpfmgr_file_is_socket_how(struct file *f, const bool direct)
{
	struct inode *inode = BPFMGR_FIELD(direct, f, f_inode);
	return inode && (BPFMGR_FIELD(direct, inode, i_mode) & BPFMGR_S_IFMT) == BPFMGR_S_IFSOCK;
}

/* The sock of a socket file (the caller checked bpfmgr_file_is_socket). */
static __always_inline struct sock *bpfmgr_file_sock_how(struct file *f, const bool direct)
{
	if (!direct) {
		struct socket *sock = BPF_CORE_READ(f, private_data);
		return sock ? BPF_CORE_READ(sock, sk) : NULL;
	}
	struct socket *sock = bpfmgr_cast(f->private_data, struct socket);
	return sock ? sock->sk : NULL;
}

/* Direct loads (bpf_rdonly_cast, Linux 6.2+): the names tcpint uses. */
static __always_inline struct file *bpfmgr_fd_file(struct task_struct *task, __u32 fd)
{
	return bpfmgr_task_fd_file(task, fd, BPFMGR_DIRECT);
}

static __always_inline bool bpfmgr_file_is_socket(const struct file *f)
{
	return bpfmgr_file_is_socket_how((struct file *)f, BPFMGR_DIRECT);
}

static __always_inline struct sock *bpfmgr_file_sock(const struct file *f)
{
	return bpfmgr_file_sock_how((struct file *)f, BPFMGR_DIRECT);
}

/* The sock behind `fd` of the current task if it is a socket, else NULL. */
static __always_inline struct sock *bpfmgr_current_fd_sock(__u32 fd)
{
	struct file *f = bpfmgr_fd_file(bpf_get_current_task_btf(), fd);
	if (!f || !bpfmgr_file_is_socket(f))
		return NULL;
	return bpfmgr_file_sock(f);
}

/* ::ffff:a.b.c.d (16 bytes, network order, 4-byte aligned). */
static __always_inline bool bpfmgr_is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

#endif
