// bpfmgr's places on the host and the locks of its run directory, in one
// module: the default pin root, /run/bpfmgr (its trust rule), one lock file
// per role and subject, and one locking primitive every command uses.
//
// Locks are POSIX record locks (fcntl F_SETLK) on empty files in
// /run/bpfmgr. The kernel drops a lock when its holder exits, however it
// exits (also kill -9), so a crash never leaves anything locked; F_GETLK
// names the holder's PID for messages. A holder removes its lock file as it
// lets go; a process that took the lock checks that the file still has its
// name, and tries again when not, so the directory holds only the files of
// live holders (and of dead ones, until their next holder lets go).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include <bpfmgr/plugin.hpp>

#include "handles.hpp"

namespace bpfmgr {

// Where `load`, `status`, ... pin when neither the manifest nor --pin-root
// says otherwise.
inline constexpr const char* kDefaultPinRoot = "/sys/fs/bpf/bpfmgr";
// bpfmgr's run directory: the lock files. Root's, mode 0755, on tmpfs.
inline constexpr const char* kRunDir = "/run/bpfmgr";

// What a lock serialises; each role has its own files, so roles never
// block each other.
enum class LockRole {
  PinRootState,  // changes under one pin root (load, unpin, each serve step)
  Serve,         // one `bpfmgr serve` per pin root
  EventsReader,  // one `bpfmgr events` per ring buffer (one consumer position)
};

enum class LockWait {
  Block,  // log "waiting for PID N" once, then wait
  Fail,   // throw LockBusy at once
};

// Another process (or thread) holds the lock; the message names its PID.
struct LockBusy : Error {
  LockBusy(const std::string& message, pid_t holder) : Error(message), holder(holder) {}
  pid_t holder;
};

// Opens kRunDir, creating it (0755) when missing. Trusted only when reached
// from `/` one component at a time without following symlinks, each
// directory owned by root (or by us) and writable by nobody else, as sshd's
// StrictModes: a lock file in a directory others control could be a link to
// anywhere. Throws Error naming the directory and why (a read-only /run is
// said as such).
Fd open_run_dir();

// The lock file of `role` for `key`: for the pin-root roles the key is the
// canonical pin root (the file is named by its hash: state-<hash>.lock,
// serve-<hash>.lock), for EventsReader the ring buffer's map id
// (events-map-<id>.lock).
std::string run_lock_path(LockRole role, std::string_view key);

// Who holds the lock of `role` for `key` now: 0 when nobody does (or the
// lock file does not exist). Takes nothing; `status` asks whether serve runs.
pid_t run_lock_holder(LockRole role, std::string_view key);

// A record beside a lock, NAME.json for NAME.lock (serve's state: what it
// could not apply). Written whole: to a temporary name in the run
// directory, then renamed over, so a reader sees the old or the new record.
// Throws Error.
std::string run_record_path(LockRole role, std::string_view key);
void write_run_record(const std::string& path, const std::string& content);
void remove_run_record(const std::string& path) noexcept;

// A held lock of the run directory; released on destruction (or move-from).
class RunLock {
 public:
  // Takes the lock of `role` for `key`. Throws LockBusy (with Fail, or never
  // with Block: it waits), or Error when the lock cannot be taken at all (an
  // unsafe /run/bpfmgr, a lock file that is a symlink, a read-only /run: said
  // as such, never as "held").
  static RunLock acquire(LockRole role, std::string_view key, LockWait wait);

  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  ~RunLock();

  const std::string& path() const { return path_; }

 private:
  RunLock(Fd dir, Fd fd, std::string path)
      : dir_(std::move(dir)), fd_(std::move(fd)), path_(std::move(path)) {}
  void release() noexcept;
  Fd dir_;  // the run directory the lock file was opened in
  Fd fd_;
  std::string path_;
};

}  // namespace bpfmgr
