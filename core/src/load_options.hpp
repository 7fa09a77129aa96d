// How a load runs: the options load_manifest() (loader.hpp) takes and each
// instance's transaction (instance_txn.hpp) reads, in a header of their own
// so that neither of those includes the other.
#pragma once

#include <atomic>

#include "run_dir.hpp"

namespace bpfmgr {

struct LoadOptions {
  // Run the verifier on every program, pin and attach nothing.
  bool dry_run = false;
  // Recreate maps instead of keeping pinned contents on update.
  bool reset_maps = false;
  // When another process changes the same pin root: wait for it, or fail
  // at once with LockBusy (`--no-wait`). A dry run takes no lock.
  LockWait lock_wait = LockWait::Block;
  // Catch SIGINT/SIGTERM/SIGHUP/SIGQUIT while loading: before the commit
  // they roll the load back (Interrupted), during it they are reported and
  // the commit finishes. A daemon with its own handlers sets this false and
  // may pass `cancel` instead, checked at the same points.
  bool catch_signals = true;
  const std::atomic<bool>* cancel = nullptr;
};

}  // namespace bpfmgr
