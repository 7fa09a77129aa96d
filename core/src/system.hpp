// Host facts and set-up the core needs before touching BPF: bpffs, tracefs,
// the cgroup v2 mount, and libbpf's log routed through spdlog (with capture
// of the verifier log for clear errors).
#pragma once

#include <string>
#include <string_view>
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

// 64-bit FNV-1a of `data` as 16 hex digits: a cheap, stable fingerprint
// (config hashes, lock file names), not a cryptographic hash.
std::string fnv1a_hex(std::string_view data);

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

// Why the verifier refused a program, from its log.
struct VerifierFailure {
  std::string reason;       // its last word, e.g. "R1 invalid mem access 'scalar'"
  std::string instruction;  // the instruction it stopped at, e.g. "12: (79) r0 = ..."
  std::string source;       // that instruction's source line (BTF line info)
};
VerifierFailure verifier_failure(const std::string& captured, const std::string& prog);

// From captured libbpf output, the verifier's reason, failing instruction
// and source line (when `prog` is named), then the log of `prog` trimmed to
// its last `max_lines` lines, or the whole captured text's last lines when
// no log block is found. Logs are never cut before this point.
std::string verifier_log_tail(const std::string& captured,
                              const std::string& prog, int max_lines = 24);

// `load --verifier-log FILE`: truncates FILE (never through a link) and
// writes every program load log libbpf reports into it, whole. Throws Error.
void set_verifier_log_file(const std::string& path);

}  // namespace bpfmgr
