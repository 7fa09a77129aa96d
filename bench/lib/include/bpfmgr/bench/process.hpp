// Running commands from a harness or a test: the bpfmgr binary, helpers
// like ip(8), and long-running readers such as `bpfmgr events` in the
// background. Part of bpfmgr::bench (header-only).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <bpfmgr/cgroup.hpp>

extern char** environ;

namespace bpfmgr::bench {

// Scratch objects (pin roots, cgroups, netns) are named "<prefix>-<pid>-<n>"
// with this prefix, so leftovers of a killed process can be recognised and
// removed by the next run (see fixtures.hpp).
inline constexpr const char* kScratchPrefix = "bpfmgr-test";

// A name unique to this process and call: "<prefix>-<pid>-<counter>".
inline std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

// The bpfmgr binary to run: $BPFMGR_BINARY when set, else the one this
// harness was built against (the build tree's in tree, the installed one
// for a harness built with find_package(bpfmgr)).
inline std::string bpfmgr_binary() {
  if (const char* env = std::getenv("BPFMGR_BINARY"); env && *env) return env;
#ifdef BPFMGR_BENCH_DEFAULT_BINARY
  return BPFMGR_BENCH_DEFAULT_BINARY;
#else
  return "bpfmgr";
#endif
}

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed; -1 when it could not start
  std::string out;
  std::string err;
};

namespace detail {
inline std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  return args;
}
inline int exit_code_of(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
}  // namespace detail

// Runs argv (looked up on PATH, no shell) and captures stdout and stderr.
inline CommandResult run(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC)) throw std::system_error(errno, std::generic_category(), "pipe");
  if (::pipe2(err_pipe, O_CLOEXEC)) {
    int e = errno;
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw std::system_error(e, std::generic_category(), "pipe");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  auto args = detail::c_argv(argv);
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
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_count = 2;
  char buf[8192];
  while (open_count > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, size_t(n));
      } else if (n == 0 || errno != EINTR) {
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
  r.exit_code = detail::exit_code_of(status);
  return r;
}

// `bpfmgr args...` with bpfmgr_binary().
inline CommandResult run_bpfmgr(const std::vector<std::string>& args) {
  std::vector<std::string> argv{bpfmgr_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

// A command running in the background, e.g. `bpfmgr events INSTANCE` as a
// user would keep it open. Its stdout and stderr go to anonymous files
// (no pipe to fill up and stall it); stop() ends it and returns them. The
// destructor stops it if still running.
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv) : argv0_(argv.at(0)) {
    out_fd_ = anonymous_file();
    err_fd_ = anonymous_file();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd_, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd_, 2);
    auto args = detail::c_argv(argv);
    int rc = ::posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      close_files();
      throw std::system_error(rc, std::generic_category(), "spawn " + argv0_);
    }
  }
  ~Background() {
    if (pid_ > 0) stop(SIGKILL);
    close_files();
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  pid_t pid() const { return pid_; }
  // What it printed to stdout so far.
  std::string output() const { return read_all(out_fd_); }
  // Waits until stdout holds `text` (true) or the process exits or the
  // timeout passes (false).
  bool wait_for_output(const std::string& text, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (output().find(text) != std::string::npos) return true;
      if (exited()) return output().find(text) != std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  // Sends `sig` (unless it exited already), reaps it, returns its output.
  CommandResult stop(int sig = SIGINT) {
    CommandResult r;
    if (pid_ > 0) {
      if (!exited()) ::kill(pid_, sig);
      int status = 0;
      if (!reaped_) {
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        status_ = status;
      }
      pid_ = -1;
    }
    r.exit_code = detail::exit_code_of(status_);
    r.out = read_all(out_fd_);
    r.err = read_all(err_fd_);
    return r;
  }

 private:
  static int anonymous_file() {
    int fd = ::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "O_TMPFILE in /tmp");
    return fd;
  }
  static std::string read_all(int fd) {
    std::string s;
    char buf[8192];
    off_t off = 0;
    for (ssize_t n; (n = ::pread(fd, buf, sizeof buf, off)) > 0; off += n) s.append(buf, size_t(n));
    return s;
  }
  bool exited() {
    if (reaped_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = status;
    }
    return reaped_;
  }
  void close_files() {
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
    out_fd_ = err_fd_ = -1;
  }

  std::string argv0_;
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// Mount point of cgroup v2 (the SDK's, <bpfmgr/cgroup.hpp>); throws when
// there is none.
inline std::string cgroup2_root() {
  auto dir = cgroup2_mount();
  if (dir.empty()) throw std::runtime_error("no cgroup2 mount in /proc/self/mounts");
  return dir;
}

}  // namespace bpfmgr::bench
