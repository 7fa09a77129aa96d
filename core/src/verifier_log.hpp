// libbpf's log routed through spdlog, with capture of the verifier log, and
// the verifier log read for clear errors: its reason, failing instruction
// and source line; `load --verifier-log FILE` keeps it whole.
#pragma once

#include <string>
#include <vector>

namespace bpfmgr {

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
