/* Shared by the BPF program and the plugin: the map's key and value. */
#ifndef EXECCOUNT_H
#define EXECCOUNT_H

#define EXECCOUNT_COMM_LEN 16

struct exec_key {
	char comm[EXECCOUNT_COMM_LEN];
};

struct exec_stats {
	__u64 execs;
	__u64 last_pid;
};

#endif
