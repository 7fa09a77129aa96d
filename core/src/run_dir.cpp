#include "run_dir.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include "errno_text.hpp"
#include "fingerprint.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

// POSIX record locks belong to a process, not to a file descriptor: two
// threads of one process would both "get" the lock, and closing any
// descriptor of the file drops it. Holders in this process are therefore
// tracked here too, and a lock file is opened once per process at a time.
std::mutex g_mutex;
std::condition_variable g_released;
std::set<std::string> g_held;

std::string mode_text(mode_t mode) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", unsigned(mode & 07777));
  return b;
}

// A directory a root process may trust: owned by root (or by us), writable
// by nobody else. On the way to the run directory (not the run directory
// itself) a root-owned sticky directory is fine, as /tmp for plugins
// (docs/safety.md): others may add entries there but cannot rename or
// replace root's, and one they made in our place fails the owner check.
void check_trusted_dir(int fd, const std::string& path, bool sticky_ok) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error("cannot inspect " + path + ": " + errno_text(errno));
  if (!S_ISDIR(st.st_mode)) throw Error(path + " is not a directory");
  const char* rule = "; bpfmgr uses it only when root's and writable by nobody else";
  if (st.st_uid != 0 && st.st_uid != ::geteuid())
    throw Error("refusing run directory " + path + ": owned by uid " +
                std::to_string(st.st_uid) + rule);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(sticky_ok && st.st_uid == 0 && (st.st_mode & S_ISVTX)))
    throw Error("refusing run directory " + path + ": writable by group or others (mode " +
                mode_text(st.st_mode) + ")" + rule);
}

const char* role_prefix(LockRole role) {
  switch (role) {
    case LockRole::PinRootState: return "state";
    case LockRole::Serve: return "serve";
    case LockRole::EventsReader: return "events-map";
  }
  return "?";
}

const char* role_noun(LockRole role) {
  switch (role) {
    case LockRole::PinRootState: return "the pin-root lock";
    case LockRole::Serve: return "the serve lock";
    case LockRole::EventsReader: return "the reader lock";
  }
  return "the lock";
}

std::string process_description(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string cmd;
  char c;
  while (cmd.size() < 160 && in.get(c)) cmd += c ? c : ' ';
  while (!cmd.empty() && cmd.back() == ' ') cmd.pop_back();
  return cmd.empty() ? "" : " (" + cmd + ")";
}

std::string busy_message(LockRole role, std::string_view key, pid_t holder) {
  auto who = "PID " + std::to_string(holder) + process_description(holder);
  switch (role) {
    case LockRole::PinRootState:
      return "pin root " + std::string(key) + " is being changed by " + who;
    case LockRole::Serve:
      return "pin root " + std::string(key) + " already has a `serve` holder: " + who;
    case LockRole::EventsReader:
      return "ring buffer map id " + std::string(key) + " is being read by " + who;
  }
  return "locked by " + who;
}

// Opens (creating) the lock file `name` of `dir`: never through a symlink,
// and only a plain file of root's with one link (a hard link to a file
// elsewhere would lock, and let us write, that file). An empty Fd when the
// file was removed by its releasing holder in between: try again.
Fd open_lock_file(int dir, const std::string& name, const std::string& path, LockRole role) {
  Fd fd(::openat(dir, name.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    int err = errno;
    throw Error(std::string("cannot create ") + role_noun(role) + " " + path + ": " +
                (err == ELOOP ? "it is a symlink (" + errno_text(err) + ")" : errno_text(err)));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw Error("cannot inspect " + path + ": " + errno_text(errno));
  if (S_ISREG(st.st_mode) && st.st_nlink == 0) return Fd();
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || (st.st_uid != 0 && st.st_uid != ::geteuid()))
    throw Error(std::string("refusing ") + role_noun(role) + " " + path +
                ": not a plain file of root's with one link");
  return fd;
}

// Whether `name` in `dir` is still the file `fd` has open. A lock taken on
// a file its holder has since removed locks nothing anyone else will find.
bool still_named(int dir, const std::string& name, int fd) {
  struct stat mine {}, named {};
  return ::fstat(fd, &mine) == 0 &&
         ::fstatat(dir, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
         mine.st_dev == named.st_dev && mine.st_ino == named.st_ino;
}

// Who holds a record lock on `fd`; 0 when nobody does any more.
pid_t lock_holder(int fd, const std::string& path) {
  struct flock q {};
  q.l_type = F_WRLCK;
  q.l_whence = SEEK_SET;
  if (::fcntl(fd, F_GETLK, &q) != 0)
    throw Error("cannot query lock " + path + ": " + errno_text(errno));
  return q.l_type == F_UNLCK ? 0 : q.l_pid;
}

}  // namespace

Fd open_run_dir() {
  Fd dir(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw Error("cannot open /: " + errno_text(errno));
  check_trusted_dir(dir.get(), "/", true);
  std::string path;
  auto parts = fs::path(kRunDir).relative_path();
  for (auto it = parts.begin(); it != parts.end(); ++it) {
    auto name = it->string();
    path += "/" + name;
    bool last = std::next(it) == parts.end();
    if (last && ::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST)
      throw Error("cannot create the run directory " + path + ": " + errno_text(errno) +
                  (errno == EROFS ? " (load, unpin, serve and events lock files there)" : ""));
    Fd next(::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next)
      throw Error("cannot open " + path + ": " +
                  (errno == ELOOP || errno == ENOTDIR
                       ? std::string("it is a symlink or not a directory (bpfmgr uses a "
                                     "real directory, not a link)")
                       : errno_text(errno)));
    check_trusted_dir(next.get(), path, !last);
    dir = std::move(next);
  }
  return dir;
}

std::string run_lock_path(LockRole role, std::string_view key) {
  std::string id = role == LockRole::EventsReader ? std::string(key) : fnv1a_hex(key);
  return std::string(kRunDir) + "/" + role_prefix(role) + "-" + id + ".lock";
}

pid_t run_lock_holder(LockRole role, std::string_view key) {
  auto path = run_lock_path(role, key);
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return 0;
  try {
    return lock_holder(fd.get(), path);
  } catch (const Error&) {
    return 0;
  }
}

std::string run_record_path(LockRole role, std::string_view key) {
  auto path = run_lock_path(role, key);
  return path.substr(0, path.size() - std::strlen(".lock")) + ".json";
}

void write_run_record(const std::string& path, const std::string& content) {
  Fd dir = open_run_dir();
  auto name = fs::path(path).filename().string();
  auto tmp = name + ".tmp-" + std::to_string(::getpid());
  Fd fd(::openat(dir.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                 0644));
  if (!fd) throw Error("cannot write " + path + ": " + errno_text(errno));
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    auto n = ::write(fd.get(), p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::unlinkat(dir.get(), tmp.c_str(), 0);
      throw Error("cannot write " + path + ": " + errno_text(err));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::renameat(dir.get(), tmp.c_str(), dir.get(), name.c_str()) != 0) {
    int err = errno;
    ::unlinkat(dir.get(), tmp.c_str(), 0);
    throw Error("cannot write " + path + ": " + errno_text(err));
  }
}

void remove_run_record(const std::string& path) noexcept { ::unlink(path.c_str()); }

RunLock RunLock::acquire(LockRole role, std::string_view key, LockWait wait) {
  auto path = run_lock_path(role, key);
  bool logged = false;
  {
    std::unique_lock lk(g_mutex);
    while (g_held.count(path)) {
      if (wait == LockWait::Fail) throw LockBusy(busy_message(role, key, ::getpid()), ::getpid());
      if (!logged)
        spdlog::warn("{}; waiting for it (this process) to finish",
                     busy_message(role, key, ::getpid()));
      logged = true;
      g_released.wait(lk);
    }
    g_held.insert(path);
  }
  try {
    Fd dir = open_run_dir();
    auto name = fs::path(path).filename().string();
    for (;;) {
      Fd fd = open_lock_file(dir.get(), name, path, role);
      if (!fd) continue;
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      for (;;) {
        if (::fcntl(fd.get(), F_SETLK, &fl) == 0) break;
        if (errno != EAGAIN && errno != EACCES)
          throw Error("cannot lock " + path + ": " + errno_text(errno));
        pid_t holder = lock_holder(fd.get(), path);
        if (holder == 0) continue;  // released in between
        if (wait == LockWait::Fail) throw LockBusy(busy_message(role, key, holder), holder);
        if (!logged)
          spdlog::warn("{}; waiting for PID {} to finish", busy_message(role, key, holder), holder);
        logged = true;
        if (::fcntl(fd.get(), F_SETLKW, &fl) == 0) break;
        if (errno != EINTR) throw Error("cannot lock " + path + ": " + errno_text(errno));
      }
      // The holder we waited for removed the file as it let go: lock the
      // file that now has the name (or a new one).
      if (!still_named(dir.get(), name, fd.get())) continue;
      spdlog::debug("locked {} ({})", path, key);
      return RunLock(std::move(dir), std::move(fd), path);
    }
  } catch (...) {
    std::lock_guard lk(g_mutex);
    g_held.erase(path);
    g_released.notify_all();
    throw;
  }
}

RunLock::RunLock(RunLock&& other) noexcept
    : dir_(std::move(other.dir_)), fd_(std::move(other.fd_)), path_(std::move(other.path_)) {}

RunLock& RunLock::operator=(RunLock&& other) noexcept {
  if (this != &other) {
    release();
    dir_ = std::move(other.dir_);
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
  }
  return *this;
}

RunLock::~RunLock() { release(); }

void RunLock::release() noexcept {
  if (!fd_) return;
  // Removed while still held, so the run directory keeps only the lock
  // files of live holders (and of holders that died: the next one removes
  // those). Only a holder removes its file, and a process that opened the
  // old file meanwhile sees, once it has the lock, that the name is gone.
  auto name = fs::path(path_).filename().string();
  if (still_named(dir_.get(), name, fd_.get())) ::unlinkat(dir_.get(), name.c_str(), 0);
  fd_.reset();  // closing drops the record lock
  dir_.reset();
  std::lock_guard lk(g_mutex);
  g_held.erase(path_);
  g_released.notify_all();
}

}  // namespace bpfmgr
