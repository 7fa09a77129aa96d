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

namespace bpfmgr::test {

// Paths of the build tree, baked in by CMake.
std::string bpfmgr_binary();   // build/bin/bpfmgr
std::string plugin_dir();      // build/lib/bpfmgr/plugins
std::string test_plugin_dir(); // build/lib/bpfmgr/test-plugins (core tests)
std::string source_dir();      // repository root
std::string build_dir();       // CMake build tree
// Mount point of cgroup v2, from /proc/self/mounts.
std::string cgroup2_root();

// A unique name: "<prefix>-<pid>-<counter>".
std::string unique_name(const std::string& prefix);

// Result of running a command.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs argv without a shell; captures stdout and stderr.
CommandResult run(const std::vector<std::string>& argv);
// Runs `bpfmgr args...` with BPFMGR_PLUGIN_PATH set to plugin_dir().
CommandResult run_bpfmgr(const std::vector<std::string>& args);

// A pin root under /sys/fs/bpf unique to this test; on destruction runs
// `bpfmgr unpin --pin-root` on it and removes whatever is left.
class PinRoot {
 public:
  PinRoot();
  ~PinRoot();
  PinRoot(const PinRoot&) = delete;
  PinRoot& operator=(const PinRoot&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A manifest's first lines: this pin root and the core tests' plugin dir.
std::string test_manifest_header(const PinRoot& root);

// A cgroup v2 child of the root, unique to this test. enter() moves this
// whole process into it (sockets created afterwards belong to it); the
// destructor moves the process back and removes the cgroup.
class ScopedCgroup {
 public:
  ScopedCgroup();
  ~ScopedCgroup();
  ScopedCgroup(const ScopedCgroup&) = delete;
  ScopedCgroup& operator=(const ScopedCgroup&) = delete;
  const std::string& path() const { return path_; }
  std::uint64_t id() const;  // cgroup id (inode number), as BPF sees it
  void enter();
  void leave();
  // Moves another process (e.g. a child) into this cgroup.
  void add_pid(int pid);

 private:
  std::string path_;
  std::string previous_;  // cgroup.procs of where we came from
  bool entered_ = false;
};

// A network namespace unique to this test, deleted on destruction.
class NetNs {
 public:
  NetNs();
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  const std::string& name() const { return name_; }
  // `ip netns exec NAME argv...`
  CommandResult exec(const std::vector<std::string>& argv) const;

 private:
  std::string name_;
};

// Runs the calling thread inside a netns for its lifetime (setns), so
// sockets created meanwhile live there. Restores the original netns.
class InNetNs {
 public:
  explicit InNetNs(const std::string& netns_name);
  ~InNetNs();
  InNetNs(const InNetNs&) = delete;
  InNetNs& operator=(const InNetNs&) = delete;

 private:
  int original_fd_ = -1;
};

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
