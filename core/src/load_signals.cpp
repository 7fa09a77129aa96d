#include "load_signals.hpp"

#include <unistd.h>

#include <atomic>
#include <cstring>

namespace bpfmgr {

namespace {

std::atomic<int> g_signal{0};
std::atomic<bool> g_committing{false};

extern "C" void on_load_signal(int sig) {
  g_signal.store(sig);
  if (g_committing.load()) {
    static const char msg[] = "bpfmgr: committing, please wait\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
  }
}

}  // namespace

LoadSignals::LoadSignals(bool install) : installed_(install) {
  g_signal = 0;
  g_committing = false;
  if (!installed_) return;
  struct sigaction sa {};
  sa.sa_handler = on_load_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &sa, &old_[i]);
}

LoadSignals::~LoadSignals() {
  g_committing = false;
  if (!installed_) return;
  for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &old_[i], nullptr);
}

int LoadSignals::received() { return g_signal.load(); }

void LoadSignals::begin_commit() {
  g_committing = true;
  if (g_signal.load()) on_load_signal(g_signal.load());
}

std::string signal_name(int sig) {
  if (sig == 0) return "cancellation";
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace bpfmgr
