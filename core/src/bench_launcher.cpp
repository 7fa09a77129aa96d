// `bpfmgr bench PLUGIN [ARGS...]`: runs the plugin's benchmark harness, an
// executable of its own (bench/<plugin>/, built as bench_<plugin>). Plugins
// carry no benchmark code; the harness loads them through the real binary.
#include <sys/stat.h>
#include <unistd.h>

#include <boost/dll/runtime_symbol_info.hpp>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "commands.hpp"
#include "system.hpp"

namespace bpfmgr {

namespace {

// Whether `path` may be run as root: a regular file (not a symlink) in a
// directory, both owned by root or by us and writable by nobody else.
std::string unsafe_to_run(const std::string& path) {
  auto writable_by_others = [](const struct stat& st) {
    return (st.st_uid != 0 && st.st_uid != ::geteuid()) ||
           (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
  };
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno_text(errno);
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  if (writable_by_others(st)) return "writable by another user";
  auto dir = path.substr(0, path.rfind('/'));
  if (::stat(dir.c_str(), &st) != 0) return errno_text(errno);
  if (writable_by_others(st)) return "its directory is writable by another user";
  return {};
}

}  // namespace

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

int cmd_bench(const std::string& plugin, const std::vector<std::string>& args) {
  auto path = find_bench_harness(plugin);
  if (path.empty()) {
    std::cerr << "error: no benchmark harness for plugin '" << plugin << "'; looked for:";
    for (auto& c : bench_harness_candidates(plugin)) std::cerr << " " << c;
    std::cerr << "\n(harnesses are built from bench/<plugin>/ as bench_<plugin>)\n";
    return kExitInvalid;
  }
  if (auto why = unsafe_to_run(path); !why.empty()) {
    std::cerr << "error: refusing to run " << path << ": " << why << "\n";
    return kExitInvalid;
  }
  std::vector<char*> argv{const_cast<char*>(path.c_str())};
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  ::execv(path.c_str(), argv.data());
  std::cerr << "error: cannot run " << path << ": " << std::strerror(errno) << "\n";
  return kExitFailed;
}

}  // namespace bpfmgr
