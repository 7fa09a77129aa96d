// Shared fixtures for tests that touch the kernel. Everything here cleans up
// in its destructor so a failing test leaves nothing behind, and every name
// is unique per process so the suite can run twice, or twice at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <bpfmgr/bench/fixtures.hpp>
#include <bpfmgr/bench/process.hpp>

namespace bpfmgr::test {

// Pin roots, cgroups, netns and running commands come from the installed
// bench helper library (bench/lib, <bpfmgr/bench/...>), which harnesses of
// third-party plugins use too.
using bench::bpfmgr_binary;  // build/bin/bpfmgr, or $BPFMGR_BINARY
using bench::cgroup2_root;
using bench::CommandResult;
using bench::InNetNs;
using bench::NetNs;
using bench::PinRoot;
using bench::run;
using bench::ScopedCgroup;
using bench::unique_name;

// Paths of the build tree, baked in by CMake.
std::string plugin_dir();      // build/lib/bpfmgr/plugins
std::string test_plugin_dir(); // build/lib/bpfmgr/test-plugins (core tests)
std::string source_dir();      // repository root
std::string build_dir();       // CMake build tree

// Runs `bpfmgr args...` with BPFMGR_PLUGIN_PATH set to plugin_dir().
CommandResult run_bpfmgr(const std::vector<std::string>& args);

// A manifest's first lines: this pin root and the core tests' plugin dir.
std::string test_manifest_header(const PinRoot& root);

// IDs of every BPF program, map and link in the kernel: compare before and
// after an operation to prove it left the kernel as it was.
// Objects carry their kernel names (links: their program's name) so a test
// can restrict the comparison to names its plugins use, and stay exact while
// other BPF users on the machine come and go.
//
// The kernel frees a program, and then the maps it used, after an RCU grace
// period: settled() waits for objects being freed to go before taking the
// "before" picture, and diff_settled() gives leftovers time to go.
struct KernelObjects {
  std::map<std::uint32_t, std::string> progs, maps, links;
  static KernelObjects snapshot();
  static KernelObjects settled(const std::vector<std::string>& names = {});
  // Human-readable difference, empty when equal. With `names`, only objects
  // whose name is one of them count.
  std::string diff(const KernelObjects& after,
                   const std::vector<std::string>& names = {}) const;
  // diff() against the kernel now, retried for up to 3 s until empty.
  std::string diff_settled(const std::vector<std::string>& names = {}) const;
};

// Every regular pin under `dir`, recursively (empty if dir is absent).
std::vector<std::string> pins_under(const std::string& dir);

// Writes a manifest text to a unique file in a temporary directory and
// returns its path; the file is removed at process exit.
std::string write_temp_file(const std::string& content,
                            const std::string& suffix = ".toml");

}  // namespace bpfmgr::test
