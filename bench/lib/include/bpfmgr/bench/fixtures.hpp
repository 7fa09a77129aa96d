// Private places for a harness or a test to work in: a pin root, a cgroup
// and a network namespace of its own. Each cleans up in its destructor, so
// a failing run leaves nothing behind, and names are unique per process so
// runs can overlap; what a killed process left is removed by the next one.
// Part of bpfmgr::bench (header-only).
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <bpfmgr/bench/process.hpp>

namespace bpfmgr::bench {

namespace detail {

// Writes to an existing kernel file (cgroup.procs); plain syscalls, as it
// also runs in a forked child.
inline void write_file(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : ::write(fd, value.data(), value.size());
  int e = errno;
  if (fd >= 0) ::close(fd);
  if (n != static_cast<ssize_t>(value.size()))
    throw std::runtime_error("cannot write '" + value + "' to " + path + ": " + std::strerror(e));
}

// Path of this process's cgroup v2, from the "0::" line.
inline std::string current_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return cgroup2_root() + line.substr(3);
  throw std::runtime_error("no cgroup v2 line in /proc/self/cgroup");
}

// A unique_name(kScratchPrefix) of a process that is gone: a run that was
// killed could not clean up after itself.
inline bool left_by_dead_process(const std::string& name) {
  const std::string prefix = std::string(kScratchPrefix) + "-";
  if (name.rfind(prefix, 0) != 0) return false;
  auto rest = name.substr(prefix.size());
  auto dash = rest.find('-');
  if (dash == std::string::npos) return false;
  int pid = std::atoi(rest.substr(0, dash).c_str());
  return pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
}

inline void ensure_bpffs() {
  std::ifstream in("/proc/self/mounts");
  std::string dev, dir, type, rest;
  while (in >> dev >> dir >> type && std::getline(in, rest))
    if (dir == "/sys/fs/bpf" && type == "bpf") return;
  run({"mount", "-t", "bpf", "bpf", "/sys/fs/bpf"});
}

// Stale pin roots: `bpfmgr unpin` them, then remove what is left.
inline void sweep_stale_pin_roots() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator("/sys/fs/bpf", ec))
      if (left_by_dead_process(e.path().filename().string())) {
        run_bpfmgr({"unpin", "--pin-root", e.path().string(), "--quiet"});
        std::filesystem::remove_all(e.path(), ec);
      }
  });
}

// Stale cgroups: their processes go back to the root, then rmdir.
inline void sweep_stale_cgroups() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::error_code ec;
    auto root = cgroup2_root();
    for (auto& e : std::filesystem::directory_iterator(root, ec))
      if (e.is_directory(ec) && left_by_dead_process(e.path().filename().string())) {
        std::ifstream procs(e.path() / "cgroup.procs");
        for (std::string pid; procs >> pid;) std::ofstream(root + "/cgroup.procs") << pid;
        ::rmdir(e.path().c_str());
      }
  });
}

inline void sweep_stale_netns() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator("/run/netns", ec))
      if (left_by_dead_process(e.path().filename().string()))
        run({"ip", "netns", "del", e.path().filename().string()});
  });
}

}  // namespace detail

// A pin root /sys/fs/bpf/<unique> for one run. The destructor runs
// `bpfmgr unpin --pin-root` on it (so plugins' before_unpin hooks run and
// links go) and then removes whatever is left (pins made by hand).
class PinRoot {
 public:
  PinRoot() {
    detail::ensure_bpffs();
    detail::sweep_stale_pin_roots();
    path_ = "/sys/fs/bpf/" + unique_name(kScratchPrefix);
  }
  ~PinRoot() {
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) return;
    run_bpfmgr({"unpin", "--pin-root", path_, "--quiet"});
    // Removing a pin drops the reference it held.
    std::filesystem::remove_all(path_, ec);
  }
  PinRoot(const PinRoot&) = delete;
  PinRoot& operator=(const PinRoot&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A cgroup v2 child of the root, unique to this run. enter() moves this
// whole process into it (sockets created afterwards belong to it); the
// destructor moves the process, and any child left in it, back out and
// removes the cgroup.
class ScopedCgroup {
 public:
  ScopedCgroup() {
    detail::sweep_stale_cgroups();
    path_ = cgroup2_root() + "/" + unique_name(kScratchPrefix);
    if (::mkdir(path_.c_str(), 0755) != 0)
      throw std::system_error(errno, std::generic_category(), "mkdir " + path_);
  }
  ~ScopedCgroup() {
    try {
      leave();
    } catch (...) {
    }
    std::ifstream procs(path_ + "/cgroup.procs");
    std::vector<std::string> pids;
    for (std::string pid; procs >> pid;) pids.push_back(pid);
    for (auto& p : pids) {
      try {
        detail::write_file(cgroup2_root() + "/cgroup.procs", p);
      } catch (...) {
      }
    }
    ::rmdir(path_.c_str());
  }
  ScopedCgroup(const ScopedCgroup&) = delete;
  ScopedCgroup& operator=(const ScopedCgroup&) = delete;

  const std::string& path() const { return path_; }
  // The cgroup id (inode number), as BPF's bpf_get_current_cgroup_id sees it.
  std::uint64_t id() const {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0)
      throw std::system_error(errno, std::generic_category(), "stat " + path_);
    return st.st_ino;
  }
  void enter() {
    if (entered_) return;
    previous_ = detail::current_cgroup();
    detail::write_file(path_ + "/cgroup.procs", std::to_string(::getpid()));
    entered_ = true;
  }
  void leave() {
    if (!entered_) return;
    detail::write_file(previous_ + "/cgroup.procs", std::to_string(::getpid()));
    entered_ = false;
  }
  // Moves another process (e.g. a child) into this cgroup.
  void add_pid(int pid) { detail::write_file(path_ + "/cgroup.procs", std::to_string(pid)); }

 private:
  std::string path_;
  std::string previous_;
  bool entered_ = false;
};

// A network namespace (ip netns) unique to this run, deleted on destruction.
class NetNs {
 public:
  NetNs() : name_(unique_name(kScratchPrefix)) {
    detail::sweep_stale_netns();
    auto r = run({"ip", "netns", "add", name_});
    if (r.exit_code != 0) throw std::runtime_error("ip netns add " + name_ + ": " + r.err);
    run({"ip", "-n", name_, "link", "set", "lo", "up"});
  }
  ~NetNs() { run({"ip", "netns", "del", name_}); }
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  const std::string& name() const { return name_; }
  // `ip netns exec NAME argv...`
  CommandResult exec(const std::vector<std::string>& argv) const {
    std::vector<std::string> full{"ip", "netns", "exec", name_};
    full.insert(full.end(), argv.begin(), argv.end());
    return run(full);
  }

 private:
  std::string name_;
};

// Runs the calling thread inside a netns for its lifetime (setns), so
// sockets created meanwhile live there; restores the original netns.
class InNetNs {
 public:
  explicit InNetNs(const std::string& netns_name) {
    original_fd_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (original_fd_ < 0) throw std::system_error(errno, std::generic_category(), "open own netns");
    std::string path = "/run/netns/" + netns_name;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      ::close(original_fd_);
      throw std::system_error(e, std::generic_category(), "open " + path);
    }
    int rc = ::setns(fd, CLONE_NEWNET);
    int err = errno;
    ::close(fd);
    if (rc != 0) {
      ::close(original_fd_);
      throw std::system_error(err, std::generic_category(), "setns " + path);
    }
  }
  ~InNetNs() {
    ::setns(original_fd_, CLONE_NEWNET);
    ::close(original_fd_);
  }
  InNetNs(const InNetNs&) = delete;
  InNetNs& operator=(const InNetNs&) = delete;

 private:
  int original_fd_ = -1;
};

}  // namespace bpfmgr::bench
