// The CLI's commands as functions (main.cpp only parses arguments), so
// tests and benchmarks can run them in-process.
#pragma once

#include <string>
#include <vector>

namespace bpfmgr {

// Exit codes, documented in README.md.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,   // the operation failed; anything it did was undone
  kExitInvalid = 2,  // bad command line, manifest or plugin; nothing touched
  kExitNotAsLoaded = 3,  // status --check: something is not as its load left it
};

struct LoadArgs {
  std::string manifest;
  std::string pin_root_override;
  bool dry_run = false;
  bool reset_maps = false;
  bool no_wait = false;  // fail at once when another process holds the pin root
  bool json = false;
};
int cmd_load(const LoadArgs& a);
int cmd_validate(const std::string& manifest, bool json);

struct UnpinArgs {
  std::string pin_root;
  std::vector<std::string> instances;  // none: all
  bool quiet = false;
  bool json = false;
  bool no_wait = false;
};
int cmd_unpin(const UnpinArgs& a);
struct StatusArgs {
  std::string pin_root;
  std::vector<std::string> instances;  // none: all
  bool json = false;
  bool check = false;  // exit kExitNotAsLoaded when there is a problem
};
int cmd_status(const StatusArgs& a);
int cmd_plugins(const std::vector<std::string>& extra_dirs, bool json);

struct EventsArgs {
  std::string pin_root;
  std::string instance;
  bool json = false;
  long count = 0;          // stop after this many records (0: no limit)
  double duration_s = 0;   // stop after this long (0: until Ctrl-C)
};
int cmd_events(const EventsArgs& a);

// Runs bench_<plugin> (exec: its exit code is ours); 2 when there is none.
int cmd_bench(const std::string& plugin, const std::vector<std::string>& args);
// `bpfmgr ... bench PLUGIN ARGS...`: takes ARGS (the harness's, --help
// included) out of `args` (argv without argv[0]) before bpfmgr parses it.
std::vector<std::string> take_harness_args(std::vector<std::string>& args);
// The harness `bpfmgr bench PLUGIN` would run, or "".
std::string find_bench_harness(const std::string& plugin);

}  // namespace bpfmgr
