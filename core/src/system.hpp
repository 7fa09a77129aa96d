// Host facts and set-up the core needs before touching BPF: bpffs, tracefs,
// the cgroup v2 mount, and libbpf's log routed through spdlog (with capture
// of the verifier log for clear errors).
#pragma once

#include <string>
#include <vector>

namespace bpfmgr {

// Mounts bpffs at /sys/fs/bpf when nothing of type bpf is mounted there.
void ensure_bpffs();
// Mounts tracefs at /sys/kernel/tracing if absent; libbpf resolves
// tracepoint ids through it. Failure is logged, not fatal.
void ensure_tracefs();
// Mount point of cgroup v2 from /proc/self/mounts (hybrid or unified).
const std::string& cgroup2_root();
// True when `path` is on a bpf filesystem.
bool is_on_bpffs(const std::string& path);

// strerror for a positive or negative errno value.
std::string errno_text(int err);

// Routes libbpf's messages to spdlog. Call once at start-up.
void install_libbpf_logger();

// While alive, libbpf warnings are captured (not printed) so the caller can
// show the relevant part, e.g. the verifier log of a rejected program.
class LibbpfLogCapture {
 public:
  LibbpfLogCapture();
  ~LibbpfLogCapture();
  LibbpfLogCapture(const LibbpfLogCapture&) = delete;
  LibbpfLogCapture& operator=(const LibbpfLogCapture&) = delete;
  const std::string& text() const;
};

// From captured libbpf output, the verifier log of `prog` trimmed to its
// last `max_lines` lines (where the verifier says what failed), or the whole
// captured text's last lines when no log block is found.
std::string verifier_log_tail(const std::string& captured,
                              const std::string& prog, int max_lines = 24);

}  // namespace bpfmgr
