#include "test_support.hpp"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <system_error>

extern char** environ;

namespace bpfmgr::test {
namespace fs = std::filesystem;

std::string bpfmgr_binary() { return BPFMGR_TEST_BINARY; }
std::string plugin_dir() { return BPFMGR_TEST_PLUGIN_DIR; }
std::string test_plugin_dir() { return BPFMGR_TEST_TEST_PLUGIN_DIR; }
std::string source_dir() { return BPFMGR_TEST_SOURCE_DIR; }
std::string build_dir() { return BPFMGR_TEST_BUILD_DIR; }

std::string test_manifest_header(const PinRoot& root) {
  return "pin_root = \"" + root.path() + "\"\nplugin_path = [\"" +
         test_plugin_dir() + "\"]\n";
}

std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter++);
}

namespace {

std::string cgroup2_mount() {
  std::ifstream in("/proc/self/mounts");
  std::string dev, dir, type, rest;
  while (in >> dev >> dir >> type && std::getline(in, rest))
    if (type == "cgroup2") return dir;
  throw std::runtime_error("no cgroup2 mount in /proc/self/mounts");
}

// Path of this process's cgroup v2, from the "0::" line.
std::string current_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return cgroup2_mount() + line.substr(3);
  throw std::runtime_error("no cgroup v2 line in /proc/self/cgroup");
}

void write_file(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value;
  out.flush();
  if (!out) throw std::runtime_error("cannot write '" + value + "' to " + path);
}

void ensure_bpffs() {
  struct stat st {};
  if (::stat("/sys/fs/bpf", &st) == 0) {
    std::ifstream in("/proc/self/mounts");
    std::string dev, dir, type, rest;
    while (in >> dev >> dir >> type && std::getline(in, rest))
      if (dir == "/sys/fs/bpf" && type == "bpf") return;
  }
  run({"mount", "-t", "bpf", "bpf", "/sys/fs/bpf"});
}

// "<prefix>-<pid>-<n>" names made by unique_name() of a process that is
// gone: a test run that was killed could not clean up after itself.
bool left_by_dead_process(const std::string& name) {
  static const std::string prefix = "bpfmgr-test-";
  if (name.rfind(prefix, 0) != 0) return false;
  auto rest = name.substr(prefix.size());
  auto dash = rest.find('-');
  if (dash == std::string::npos) return false;
  int pid = std::atoi(rest.substr(0, dash).c_str());
  return pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
}

// Removes pin roots, cgroups and network namespaces that earlier, killed
// test processes left behind, once per process.
void sweep_stale_leftovers() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/sys/fs/bpf", ec))
      if (left_by_dead_process(e.path().filename().string())) {
        run_bpfmgr({"unpin", "--pin-root", e.path().string(), "--quiet"});
        fs::remove_all(e.path(), ec);
      }
    auto cg_root = cgroup2_mount();
    for (auto& e : fs::directory_iterator(cg_root, ec))
      if (e.is_directory(ec) && left_by_dead_process(e.path().filename().string())) {
        std::ifstream procs(e.path() / "cgroup.procs");
        for (std::string pid; procs >> pid;) {
          std::ofstream(cg_root + "/cgroup.procs") << pid;
        }
        ::rmdir(e.path().c_str());
      }
    for (auto& e : fs::directory_iterator("/run/netns", ec))
      if (left_by_dead_process(e.path().filename().string()))
        run({"ip", "netns", "del", e.path().filename().string()});
  });
}

}  // namespace

CommandResult run(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC))
    throw std::system_error(errno, std::generic_category(), "pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  CommandResult r;
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    r.err = "spawn " + argv[0] + ": " + std::strerror(rc);
    return r;
  }
  // Both pipes are drained together so neither can fill and block the child.
  std::string out, err;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&out, &err};
  int open_count = 2;
  char buf[8192];
  while (open_count > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, size_t(n));
      } else {
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.out = std::move(out);
  r.err = std::move(err);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

CommandResult run_bpfmgr(const std::vector<std::string>& args) {
  ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
  std::vector<std::string> argv{bpfmgr_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

std::string cgroup2_root() { return cgroup2_mount(); }

// ------------------------------------------------------------------ PinRoot

PinRoot::PinRoot() {
  ensure_bpffs();
  sweep_stale_leftovers();
  path_ = "/sys/fs/bpf/" + unique_name("bpfmgr-test");
}

PinRoot::~PinRoot() {
  std::error_code ec;
  if (!fs::exists(path_, ec)) return;
  run_bpfmgr({"unpin", "--pin-root", path_, "--quiet"});
  // Whatever unpin did not remove (a test that pinned by hand) goes too:
  // removing a pin drops the reference it held.
  fs::remove_all(path_, ec);
}

// ------------------------------------------------------------- ScopedCgroup

ScopedCgroup::ScopedCgroup() {
  sweep_stale_leftovers();
  path_ = cgroup2_mount() + "/" + unique_name("bpfmgr-test");
  if (::mkdir(path_.c_str(), 0755) != 0)
    throw std::system_error(errno, std::generic_category(), "mkdir " + path_);
}

ScopedCgroup::~ScopedCgroup() {
  try {
    leave();
  } catch (...) {
  }
  // Children that outlived the test would keep the cgroup busy: move them
  // out to the root before removing it.
  std::ifstream procs(path_ + "/cgroup.procs");
  std::string pid;
  std::vector<std::string> pids;
  while (procs >> pid) pids.push_back(pid);
  for (auto& p : pids) {
    try {
      write_file(cgroup2_mount() + "/cgroup.procs", p);
    } catch (...) {
    }
  }
  ::rmdir(path_.c_str());
}

std::uint64_t ScopedCgroup::id() const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0)
    throw std::system_error(errno, std::generic_category(), "stat " + path_);
  return st.st_ino;
}

void ScopedCgroup::enter() {
  if (entered_) return;
  previous_ = current_cgroup();
  write_file(path_ + "/cgroup.procs", std::to_string(::getpid()));
  entered_ = true;
}

void ScopedCgroup::leave() {
  if (!entered_) return;
  write_file(previous_ + "/cgroup.procs", std::to_string(::getpid()));
  entered_ = false;
}

void ScopedCgroup::add_pid(int pid) {
  write_file(path_ + "/cgroup.procs", std::to_string(pid));
}

// -------------------------------------------------------------------- NetNs

NetNs::NetNs() : name_(unique_name("bpfmgr-test")) {
  sweep_stale_leftovers();
  auto r = run({"ip", "netns", "add", name_});
  if (r.exit_code != 0)
    throw std::runtime_error("ip netns add " + name_ + ": " + r.err);
  run({"ip", "-n", name_, "link", "set", "lo", "up"});
}

NetNs::~NetNs() { run({"ip", "netns", "del", name_}); }

CommandResult NetNs::exec(const std::vector<std::string>& argv) const {
  std::vector<std::string> full{"ip", "netns", "exec", name_};
  full.insert(full.end(), argv.begin(), argv.end());
  return run(full);
}

InNetNs::InNetNs(const std::string& netns_name) {
  original_fd_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original_fd_ < 0)
    throw std::system_error(errno, std::generic_category(), "open own netns");
  std::string path = "/run/netns/" + netns_name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ::close(original_fd_);
    throw std::system_error(errno, std::generic_category(), "open " + path);
  }
  int rc = ::setns(fd, CLONE_NEWNET);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    ::close(original_fd_);
    throw std::system_error(err, std::generic_category(), "setns " + path);
  }
}

InNetNs::~InNetNs() {
  ::setns(original_fd_, CLONE_NEWNET);
  ::close(original_fd_);
}

// ------------------------------------------------------------ KernelObjects

namespace {

std::string prog_name(std::uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return {};
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  std::string name = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.name : "";
  ::close(fd);
  return name;
}

std::string map_name(std::uint32_t id) {
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0) return {};
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  std::string name = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.name : "";
  ::close(fd);
  return name;
}

std::string link_prog_name(std::uint32_t id) {
  int fd = bpf_link_get_fd_by_id(id);
  if (fd < 0) return {};
  bpf_link_info info{};
  std::uint32_t len = sizeof(info);
  std::string name =
      bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? prog_name(info.prog_id) : "";
  ::close(fd);
  return name;
}

template <class Next, class Name>
std::map<std::uint32_t, std::string> all_ids(Next next, Name name) {
  std::map<std::uint32_t, std::string> ids;
  std::uint32_t id = 0;
  while (next(id, &id) == 0) ids[id] = name(id);
  return ids;
}

void diff_set(std::ostringstream& os, const char* what,
              const std::map<std::uint32_t, std::string>& a,
              const std::map<std::uint32_t, std::string>& b,
              const std::vector<std::string>& names) {
  auto counts = [&](const std::string& n) {
    if (names.empty()) return true;
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  for (auto& [id, n] : b)
    if (!a.count(id) && counts(n)) os << what << " " << id << " (" << n << ") appeared; ";
  for (auto& [id, n] : a)
    if (!b.count(id) && counts(n)) os << what << " " << id << " (" << n << ") disappeared; ";
}
}  // namespace

KernelObjects KernelObjects::snapshot() {
  KernelObjects k;
  k.progs = all_ids(bpf_prog_get_next_id, prog_name);
  k.maps = all_ids(bpf_map_get_next_id, map_name);
  k.links = all_ids(bpf_link_get_next_id, link_prog_name);
  return k;
}

KernelObjects KernelObjects::settled(const std::vector<std::string>& names) {
  auto now = snapshot();
  for (int i = 0; i < 60; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto next = snapshot();
    if (now.diff(next, names).empty()) return next;
    now = std::move(next);
  }
  return now;
}

std::string KernelObjects::diff_settled(const std::vector<std::string>& names) const {
  std::string d;
  for (int i = 0; i < 60; ++i) {
    d = diff(snapshot(), names);
    if (d.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return d;
}

std::string KernelObjects::diff(const KernelObjects& after,
                                const std::vector<std::string>& names) const {
  std::ostringstream os;
  diff_set(os, "prog", progs, after.progs, names);
  diff_set(os, "map", maps, after.maps, names);
  diff_set(os, "link", links, after.links, names);
  return os.str();
}

std::vector<std::string> pins_under(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (!it->is_directory(ec)) out.push_back(it->path().string());
  }
  return out;
}

std::string write_temp_file(const std::string& content,
                            const std::string& suffix) {
  static std::mutex mu;
  static std::vector<std::string> created;
  std::string dir = "/tmp/bpfmgr-tests";
  fs::create_directories(dir);
  std::string path = dir + "/" + unique_name("file") + suffix;
  std::ofstream(path) << content;
  std::lock_guard lock(mu);
  if (created.empty())
    std::atexit([] {
      std::lock_guard l(mu);
      for (auto& p : created) ::unlink(p.c_str());
    });
  created.push_back(path);
  return path;
}

}  // namespace bpfmgr::test
