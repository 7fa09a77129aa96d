#include "plugin_crash.hpp"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace bpfmgr {

namespace {

constexpr std::array<int, 5> kFatal{SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

// Per thread (serve runs plugins on more than one); initial-exec TLS in
// the executable, safe to read in a signal handler.
thread_local bool t_active = false;
thread_local char t_head[512];  // "bpfmgr: plugin P crashed in hook H of instance I ("
thread_local char t_tail[1024];  // "); what is left\n"

const char* fatal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
  }
  return "a fatal signal";
}

void put(const char* s) {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= std::size_t(w);
  }
}

extern "C" void on_fatal_signal(int sig) {
  if (t_active) {
    put(t_head);
    put(fatal_name(sig));
    put(t_tail);
  }
  // The default action, as if no handler had been there: a fault re-runs
  // the faulting instruction, a raised signal is delivered on return.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

}  // namespace

void install_plugin_crash_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : kFatal) {
      struct sigaction old {};
      // A handler someone else installed (a sanitizer, a test harness) stays.
      if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_DFL) continue;
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

PluginCallScope::PluginCallScope(const std::string& plugin, const char* hook,
                                 const std::string& instance,
                                 const std::string& consequence)
    : outer_(t_active) {
  install_plugin_crash_handler();
  std::snprintf(t_head, sizeof t_head, "bpfmgr: plugin %s crashed in hook %s%s%s (",
                plugin.c_str(), hook, instance.empty() ? "" : " of instance ",
                instance.c_str());
  std::snprintf(t_tail, sizeof t_tail, "); %s\n", consequence.c_str());
  t_active = true;
}

PluginCallScope::~PluginCallScope() { t_active = outer_; }

std::string crash_consequence(const std::string& hook, const std::string& instance) {
  std::string inst = instance.empty() ? "it" : "'" + instance + "'";
  // create and before_load run while a manifest is resolved (validate
  // too), and again inside a load when serve applies a resolve once more.
  if (hook == "create" || hook == "before_load" || hook == "destroy")
    return "if a load was running, it had not committed: whatever it had staged (pins, and "
           "links that may already run) is left in the pin root's _staging- directory, "
           "which `bpfmgr status` shows, and the next `bpfmgr load` or `bpfmgr unpin` "
           "reverts it; otherwise nothing was changed";
  // Its attach hook runs before anything of the instance is pinned
  // (instance_txn.cpp, stage): new links die with the process.
  if (hook == "after_load")
    return "the load had not committed, and nothing of " + inst +
           " was pinned or attached yet; other instances it had staged are left in the pin "
           "root's _staging- directories, which `bpfmgr status` shows, and the next "
           "`bpfmgr load` of the manifest or `bpfmgr unpin` reverts them";
  if (hook == "attach")
    return "the load had not committed, and nothing of " + inst +
           " was pinned yet: its new links died with the process; a link it had switched to "
           "a new program in place keeps running it, which `bpfmgr status` shows as drift, "
           "until the next `bpfmgr load` of the manifest (or `bpfmgr unpin`) repairs it";
  if (hook == "after_attach")
    return "the load had not committed: whatever it had staged for " + inst +
           " (pins, and links that may already run) is left in the pin root's "
           "_staging- directory, which `bpfmgr status` shows; the next `bpfmgr load` of "
           "the manifest or `bpfmgr unpin` reverts it";
  if (hook == "before_unpin")
    return "nothing of " + inst + " was removed yet; run `bpfmgr unpin` again";
  return "nothing under the pin root was changed; nothing to repair";
}

}  // namespace bpfmgr
