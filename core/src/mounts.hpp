// The filesystems the core needs before touching BPF: bpffs (pins) and
// tracefs (tracepoint ids). The cgroup v2 mount is the SDK's
// (bpfmgr::cgroup2_mount, <bpfmgr/cgroup.hpp>).
#pragma once

#include <string>

namespace bpfmgr {

// Mounts bpffs at /sys/fs/bpf when nothing of type bpf is mounted there.
void ensure_bpffs();
// Mounts tracefs at /sys/kernel/tracing if absent; libbpf resolves
// tracepoint ids through it. Failure is logged, not fatal.
void ensure_tracefs();
// Both, as a load needs them.
void ensure_load_filesystems();
// True when `path` is on a bpf filesystem.
bool is_on_bpffs(const std::string& path);

}  // namespace bpfmgr
