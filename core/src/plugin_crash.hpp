// A plugin that crashes is named. While the core runs a plugin's code, a
// fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) first writes
//   bpfmgr: plugin P crashed in hook H of instance I (SIGSEGV); <what is left>
// to stderr, then the signal's default action ends the process as before
// (exit status 128+signal: 139 for SIGSEGV, 134 for SIGABRT), so service
// managers and shells see the same death. The message is composed before
// the call; the handler only write()s it (async-signal-safe).
#pragma once

#include <string>

namespace bpfmgr {

// Installs the handler (once per process; later calls do nothing). A fatal
// signal outside a plugin call keeps its default action.
void install_plugin_crash_handler();

// Marks the calling thread as running `plugin`'s `hook` for its lifetime.
// `consequence` says what a crash here leaves and how it is repaired.
class PluginCallScope {
 public:
  PluginCallScope(const std::string& plugin, const char* hook, const std::string& instance,
                  const std::string& consequence);
  ~PluginCallScope();
  PluginCallScope(const PluginCallScope&) = delete;
  PluginCallScope& operator=(const PluginCallScope&) = delete;

 private:
  bool outer_;  // the scope this one nests in, restored after
};

// What a crash in `hook` leaves, in the words of the message.
std::string crash_consequence(const std::string& hook, const std::string& instance);

}  // namespace bpfmgr
