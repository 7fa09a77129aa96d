// One lock per pin root, held by every command that changes what is pinned
// there (load, unpin, serve): the pin-root roles of the run directory's
// locks (run_dir.hpp), keyed by the pin root's canonical path.
#pragma once

#include <string>
#include <string_view>

#include "run_dir.hpp"

namespace bpfmgr {

class PinRootLock {
 public:
  // role "state" serialises changes; serve takes role "serve" with Fail so a
  // second `serve` on the same pin root exits at once naming the first's PID.
  // Throws LockBusy, or Error when the lock file cannot be used (an unsafe
  // /run/bpfmgr, a read-only /run: said as such, never as "held").
  static PinRootLock acquire(const std::string& pin_root, LockWait wait,
                             std::string_view role = "state");

  const std::string& lock_file() const { return lock_.path(); }

 private:
  explicit PinRootLock(RunLock lock) : lock_(std::move(lock)) {}
  RunLock lock_;
};

// Directory of the lock files (run_dir.hpp).
inline constexpr const char* kLockDir = kRunDir;
// The lock file for a pin root and role (exposed for tests and messages).
std::string pin_root_lock_path(const std::string& pin_root, std::string_view role);

// `bpfmgr serve`'s record for a pin root (its state: what it could not
// apply), beside its lock, and the PID holding that lock (0: no serve runs).
std::string serve_record_path(const std::string& pin_root);
pid_t serve_lock_holder(const std::string& pin_root);

}  // namespace bpfmgr
