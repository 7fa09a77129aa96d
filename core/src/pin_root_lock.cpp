#include "pin_root_lock.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include "system.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

// POSIX record locks belong to a process, not to a file descriptor: two
// threads of one process would both "get" the lock. Holders in this process
// are therefore tracked here too.
std::mutex g_mutex;
std::condition_variable g_released;
std::set<std::string> g_held;

std::string canonical_pin_root(const std::string& pin_root) {
  std::error_code ec;
  auto p = fs::weakly_canonical(fs::absolute(pin_root, ec), ec);
  if (ec) p = fs::absolute(pin_root).lexically_normal();
  auto s = p.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// A directory a root process may trust: not a symlink, owned by root (or
// by us), writable by nobody else.
void check_trusted_dir(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw Error("cannot inspect " + path + ": " + errno_text(errno));
  if (!S_ISDIR(st.st_mode)) throw Error(path + " is not a directory");
  if (st.st_uid != 0 && st.st_uid != ::geteuid())
    throw Error("refusing lock directory " + path + ": owned by uid " +
                std::to_string(st.st_uid) + ", not root");
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    throw Error("refusing lock directory " + path +
                ": writable by group or others (mode " +
                [&] {
                  char b[8];
                  std::snprintf(b, sizeof b, "%04o", st.st_mode & 07777);
                  return std::string(b);
                }() +
                ")");
}

// Opens kLockDir component by component without following symlinks,
// creating the last one if missing.
Fd open_lock_dir() {
  Fd dir(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw Error("cannot open /: " + errno_text(errno));
  check_trusted_dir(dir.get(), "/");
  std::string path;
  auto parts = fs::path(kLockDir).relative_path();
  for (auto it = parts.begin(); it != parts.end(); ++it) {
    auto name = it->string();
    path += "/" + name;
    bool last = std::next(it) == parts.end();
    if (last && ::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST)
      throw Error("cannot create lock directory " + path + ": " +
                  errno_text(errno) +
                  (errno == EROFS ? " (load and unpin need a writable " +
                                        std::string(kLockDir) + ")"
                                  : ""));
    Fd next(::openat(dir.get(), name.c_str(),
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next)
      throw Error("cannot open lock directory " + path + ": " +
                  (errno == ELOOP || errno == ENOTDIR
                       ? std::string("it is a symlink or not a directory")
                       : errno_text(errno)));
    check_trusted_dir(next.get(), path);
    dir = std::move(next);
  }
  return dir;
}

std::string process_description(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string cmd;
  char c;
  while (cmd.size() < 160 && in.get(c)) cmd += c ? c : ' ';
  while (!cmd.empty() && cmd.back() == ' ') cmd.pop_back();
  return cmd.empty() ? "" : " (" + cmd + ")";
}

std::string busy_message(const std::string& pin_root, std::string_view role,
                         pid_t holder) {
  if (std::string_view(role) == "state")
    return "pin root " + pin_root + " is being changed by PID " +
           std::to_string(holder) + process_description(holder);
  return "pin root " + pin_root + " already has a `" + std::string(role) +
         "` holder: PID " + std::to_string(holder) + process_description(holder);
}

}  // namespace

std::string pin_root_lock_path(const std::string& pin_root, std::string_view role) {
  return std::string(kLockDir) + "/" + std::string(role) + "-" +
         fnv1a_hex(canonical_pin_root(pin_root)) + ".lock";
}

PinRootLock PinRootLock::acquire(const std::string& pin_root, LockWait wait,
                                 std::string_view role) {
  auto root = canonical_pin_root(pin_root);
  auto path = pin_root_lock_path(root, role);
  bool logged = false;
  {
    std::unique_lock lk(g_mutex);
    while (g_held.count(path)) {
      if (wait == LockWait::Fail)
        throw LockBusy(busy_message(root, role, ::getpid()), ::getpid());
      if (!logged)
        spdlog::warn("waiting for PID {} (this process) to finish with pin root {}",
                     ::getpid(), root);
      logged = true;
      g_released.wait(lk);
    }
    g_held.insert(path);
  }
  auto forget = [&] {
    std::lock_guard lk(g_mutex);
    g_held.erase(path);
    g_released.notify_all();
  };
  try {
    Fd dir = open_lock_dir();
    auto name = fs::path(path).filename().string();
    Fd fd(::openat(dir.get(), name.c_str(),
                   O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd)
      throw Error("cannot open lock file " + path + ": " +
                  (errno == ELOOP ? std::string("it is a symlink")
                                  : errno_text(errno)));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
        (st.st_uid != 0 && st.st_uid != ::geteuid()))
      throw Error("refusing lock file " + path +
                  ": not a plain file of root's with one link");
    for (;;) {
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      if (::fcntl(fd.get(), F_SETLK, &fl) == 0) break;
      if (errno != EAGAIN && errno != EACCES)
        throw Error("cannot lock " + path + ": " + errno_text(errno));
      struct flock q {};
      q.l_type = F_WRLCK;
      q.l_whence = SEEK_SET;
      if (::fcntl(fd.get(), F_GETLK, &q) != 0)
        throw Error("cannot query lock " + path + ": " + errno_text(errno));
      if (q.l_type == F_UNLCK) continue;  // released in between
      if (wait == LockWait::Fail)
        throw LockBusy(busy_message(root, role, q.l_pid), q.l_pid);
      if (!logged)
        spdlog::warn("{}; waiting for PID {} to finish",
                     busy_message(root, role, q.l_pid), q.l_pid);
      logged = true;
      fl.l_type = F_WRLCK;
      if (::fcntl(fd.get(), F_SETLKW, &fl) == 0) break;
      if (errno != EINTR)
        throw Error("cannot lock " + path + ": " + errno_text(errno));
    }
    spdlog::debug("locked {} ({} of {})", path, role, root);
    return PinRootLock(std::move(fd), path);
  } catch (...) {
    forget();
    throw;
  }
}

PinRootLock::PinRootLock(PinRootLock&& other) noexcept
    : fd_(std::move(other.fd_)), path_(std::move(other.path_)) {}

PinRootLock& PinRootLock::operator=(PinRootLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
  }
  return *this;
}

PinRootLock::~PinRootLock() { release(); }

void PinRootLock::release() noexcept {
  if (!fd_) return;
  fd_.reset();  // closing drops the record lock
  std::lock_guard lk(g_mutex);
  g_held.erase(path_);
  g_released.notify_all();
}

}  // namespace bpfmgr
