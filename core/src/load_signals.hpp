// Ctrl-C (or a service manager's TERM) during a load: before the commit
// the load stops at the next step and rolls back; during the commit it
// says "committing, please wait" and finishes. SIGKILL cannot be caught;
// the next load or unpin finishes or reverts what it leaves (pin_txn.hpp).
#pragma once

#include <array>
#include <csignal>
#include <string>

namespace bpfmgr {

// Catches SIGINT, SIGTERM, SIGHUP and SIGQUIT for its lifetime (when
// `install`), restoring the previous handlers after. One load at a time.
class LoadSignals {
 public:
  explicit LoadSignals(bool install);
  ~LoadSignals();
  LoadSignals(const LoadSignals&) = delete;
  LoadSignals& operator=(const LoadSignals&) = delete;

  // The last signal caught since construction, 0 when none.
  static int received();
  // The commit starts: a signal now (or one already caught) only makes
  // us say "committing, please wait".
  static void begin_commit();

 private:
  static constexpr std::array<int, 4> kSignals{SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  bool installed_;
  std::array<struct sigaction, 4> old_{};
};

// "SIGINT", or "cancellation" for 0.
std::string signal_name(int sig);

}  // namespace bpfmgr
