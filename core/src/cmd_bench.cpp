// `bpfmgr bench PLUGIN [ARGS...]`: runs the plugin's benchmark harness, an
// executable of its own (bench/<plugin>/ in tree, bpfmgr_add_bench() out of
// tree, built as bench_<plugin>). Plugins carry no benchmark code; the
// harness loads them through the real binary. A harness runs as root, so
// it passes the plugin trust rules (plugin_trust.hpp) and is executed
// through the descriptor that was checked.
#include <unistd.h>

#include <boost/dll/runtime_symbol_info.hpp>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "commands.hpp"
#include "plugin_trust.hpp"

extern char** environ;

namespace bpfmgr {

std::vector<std::string> bench_harness_candidates(const std::string& plugin) {
  auto exe_dir = boost::dll::program_location().parent_path();
  auto file = "bench_" + plugin;
  // Build tree: next to bin/bpfmgr; installed: <prefix>/libexec/bpfmgr.
  return {(exe_dir / file).string(),
          (exe_dir.parent_path() / "libexec/bpfmgr" / file).string()};
}

std::string find_bench_harness(const std::string& plugin) {
  if (plugin.empty() ||
      plugin.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
    return {};
  for (auto& c : bench_harness_candidates(plugin))
    if (::access(c.c_str(), X_OK) == 0) return c;
  return {};
}

// Everything after `bench PLUGIN` is the harness's: bpfmgr's parser must
// not see it, or `bpfmgr bench NAME --help` prints bpfmgr's help instead of
// the harness's. Only global options (--log-level VALUE) may come before
// `bench`; `bpfmgr bench --help` (no PLUGIN yet) stays bpfmgr's. A `--`
// right after PLUGIN is dropped (`bpfmgr bench NAME -- ARGS` works too).
std::vector<std::string> take_harness_args(std::vector<std::string>& args) {
  std::size_t i = 0;
  while (i < args.size() && args[i].size() > 1 && args[i][0] == '-')
    i += args[i] == "--log-level" ? 2 : 1;
  if (i + 1 >= args.size() || args[i] != "bench" || args[i + 1].rfind("-", 0) == 0) return {};
  auto first = args.begin() + std::ptrdiff_t(i + 2);
  if (first != args.end() && *first == "--") ++first;
  std::vector<std::string> harness(first, args.end());
  args.resize(i + 2);
  return harness;
}

int cmd_bench(const std::string& plugin, const std::vector<std::string>& args) {
  // A harness loads BPF through bpfmgr: without root it could only fail
  // deep inside (or abort). Its --help and test list need no privileges.
  bool informational = false;
  for (auto& a : args)
    informational |= a == "--help" || a == "-h" || a.rfind("--benchmark_list_tests", 0) == 0;
  if (::geteuid() != 0 && !informational) {
    std::cerr << "error: permission denied: `bpfmgr bench` loads BPF programs and needs "
                 "root\n";
    return kExitFailed;
  }
  auto path = find_bench_harness(plugin);
  if (path.empty()) {
    std::cerr << "error: no benchmark harness for plugin '" << plugin << "'; looked for:";
    for (auto& c : bench_harness_candidates(plugin)) std::cerr << " " << c;
    std::cerr << "\n(harnesses are built as bench_<plugin>: from bench/<plugin>/ in tree, "
                 "by bpfmgr_add_bench() out of tree, installed into <prefix>/libexec/bpfmgr)\n";
    return kExitInvalid;
  }
  TrustedFile harness;
  try {
    harness = open_trusted_file(path, "run benchmark harness");
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitInvalid;
  }
  std::vector<char*> argv{const_cast<char*>(harness.path.c_str())};
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  ::fexecve(harness.fd.get(), argv.data(), environ);
  std::cerr << "error: cannot run " << harness.path << ": " << std::strerror(errno) << "\n";
  return kExitFailed;
}

}  // namespace bpfmgr
