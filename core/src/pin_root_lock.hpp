// One lock per pin root, held by every command that changes what is pinned
// there (load, unpin, serve). Locks are POSIX record locks on files in
// /run/bpfmgr, a root-owned directory nobody else may write, opened without
// following symlinks; the kernel drops a lock when its holder exits, however
// it exits, so a crash never leaves a pin root locked.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include <bpfmgr/plugin.hpp>

#include "handles.hpp"

namespace bpfmgr {

enum class LockWait {
  Block,  // log "waiting for PID N" once, then wait
  Fail,   // throw LockBusy at once
};

// Another process (or thread) holds the lock; the message names its PID.
struct LockBusy : Error {
  LockBusy(const std::string& message, pid_t holder)
      : Error(message), holder(holder) {}
  pid_t holder;
};

class PinRootLock {
 public:
  // role "state" serialises changes; serve takes role "serve" with Fail so a
  // second `serve` on the same pin root exits at once naming the first's PID.
  // Throws LockBusy, or Error when the lock file cannot be used (an unsafe
  // /run/bpfmgr, a read-only /run: said as such, never as "held").
  static PinRootLock acquire(const std::string& pin_root, LockWait wait,
                             std::string_view role = "state");

  PinRootLock(PinRootLock&& other) noexcept;
  PinRootLock& operator=(PinRootLock&& other) noexcept;
  PinRootLock(const PinRootLock&) = delete;
  PinRootLock& operator=(const PinRootLock&) = delete;
  ~PinRootLock();

  const std::string& lock_file() const { return path_; }

 private:
  PinRootLock(Fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  void release() noexcept;
  Fd fd_;
  std::string path_;
};

// Directory of the lock files; created 0755 if missing.
inline constexpr const char* kLockDir = "/run/bpfmgr";
// The lock file for a pin root and role (exposed for tests and messages).
std::string pin_root_lock_path(const std::string& pin_root, std::string_view role);

}  // namespace bpfmgr
