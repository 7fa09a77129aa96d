// Load a manifest's instances under a pin root: a transaction that stages
// every changed instance (opened, loaded, attached, then written into its
// staging directory), then commits them all (pin_txn.hpp). Any failure
// before the commit removes everything staged and reverts links updated in
// place. Pin layout: pin_layout.hpp and docs/pin-layout.md.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "load_options.hpp"
#include "pin_root_lock.hpp"
#include "pinned.hpp"
#include "plugins.hpp"
#include "resolve.hpp"
#include "state.hpp"

namespace bpfmgr {

// A signal (or `cancel`) stopped the load before its commit; it was rolled
// back. `signal` is 0 for `cancel`.
struct Interrupted : Error {
  explicit Interrupted(int sig);
  int signal;
};
// The pin root cannot be one (relative, a symlink, not on bpffs): refused
// before anything is created, a dry run included.
struct PinRootRefused : Error {
  using Error::Error;
};
// A failure before the commit whose rollback could not undo everything:
// the message says what is left.
struct RollbackIncomplete : Error {
  using Error::Error;
};
// The commit started and did not finish (a rename or removal failed): the
// journal stays and the next load or unpin finishes it.
struct CommitIncomplete : Error {
  using Error::Error;
};

struct LoadReport {
  std::vector<std::string> loaded;     // new instances
  std::vector<std::string> updated;    // changed and replaced
  std::vector<std::string> unchanged;  // same config, nothing done
  std::vector<std::string> removed;    // gone from this manifest: unpinned
  std::vector<std::string> verified;   // dry run: passed the verifier
  std::vector<std::string> recovered;  // crash leftovers finished or reverted
  std::vector<std::string> repaired;   // "name: why" replaced because the
                                       // kernel or record disagreed
  int interrupted_by = 0;              // a signal received during the commit
};

// A reload with nothing to do, told without loading a plugin: every
// enabled instance's record is complete, carries the input_fingerprint()
// this manifest and its plugin files give now, and the kernel still runs
// what it says; no instance of this manifest is to be removed and no
// interrupted load is to be finished. nullopt when any of that does not
// hold, or `options` asks for a dry run or new maps: load_manifest() then
// decides. Takes the pin root's lock while it looks.
std::optional<LoadReport> unchanged_by_records(const Manifest& manifest,
                                               const PluginRegistry& registry,
                                               const LoadOptions& options);

// Takes the pin root's lock (options.lock_wait) for the whole load.
// Throws bpfmgr::Error (after rolling back) on any failure.
LoadReport load_manifest(const ResolvedManifest& manifest,
                         const LoadOptions& options);

}  // namespace bpfmgr
