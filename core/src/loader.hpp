// Load, unpin and inspect instances under a pin root.
//
// Pin layout (see docs/pin-layout.md):
//   <pin_root>/<instance>/state          state record (one-entry array map)
//   <pin_root>/<instance>/maps/<map>     the instance's own maps
//   <pin_root>/<instance>/progs/<prog>   loaded programs
//   <pin_root>/<instance>/links/<name>   links; removing the pin detaches
//   <pin_root>/_staging-<instance>/      a load in progress (removed by the
//                                        next load or unpin after a crash)
//
// A load is a transaction: every instance is staged first (opened, loaded,
// pinned into its staging dir, attached), then all are committed by renaming
// the staged pins into place. Any failure before commit removes everything
// staged and reverts links updated in place.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pin_root_lock.hpp"
#include "plugins.hpp"
#include "resolve.hpp"
#include "state.hpp"

namespace bpfmgr {

struct LoadOptions {
  // Run the verifier on every program, pin and attach nothing.
  bool dry_run = false;
  // Recreate maps instead of keeping pinned contents on update.
  bool reset_maps = false;
  // When another process changes the same pin root: wait for it, or fail
  // at once with LockBusy (`--no-wait`). A dry run takes no lock.
  LockWait lock_wait = LockWait::Block;
};

struct LoadReport {
  std::vector<std::string> loaded;     // new instances
  std::vector<std::string> updated;    // changed and replaced
  std::vector<std::string> unchanged;  // same config, nothing done
  std::vector<std::string> removed;    // gone from this manifest: unpinned
  std::vector<std::string> verified;   // dry run: passed the verifier
};

// Takes the pin root's lock (options.lock_wait) for the whole load.
// Throws bpfmgr::Error (after rolling back) on any failure.
LoadReport load_manifest(const ResolvedManifest& manifest,
                         const LoadOptions& options);

// Instance directories under a pin root (names; staging dirs excluded).
std::vector<std::string> list_instances(const std::string& pin_root);

struct UnpinReport {
  std::vector<std::string> removed;  // instances removed
  std::vector<std::string> errors;   // what could not be removed, and why
  bool ok() const { return errors.empty(); }
};

// Removes the named instances (all of bpfmgr's when `instances` is empty,
// then crash leftovers and the pin root itself when empty) under the pin
// root's lock. For each: the plugin's before_unpin (best effort), non-link
// attachments undone, links first, the state record last. A name that is
// not an instance is an error in the report.
UnpinReport unpin(const std::string& pin_root,
                  const std::vector<std::string>& instances,
                  PluginRegistry& registry, LockWait wait = LockWait::Block);

// One instance, for callers that hold the pin root's lock (load removing
// instances dropped from its manifest). Appends failures to `errors`.
void unpin_instance_locked(const std::string& pin_root, const std::string& instance,
                           PluginRegistry& registry, std::vector<std::string>& errors);

// `bpfmgr status` for one instance, as JSON (the text form is made from it).
nlohmann::json instance_status(const std::string& pin_root,
                               const std::string& instance,
                               PluginRegistry& registry);

// A PinnedContext over an instance loaded earlier (by any process).
class PinnedInstance;
// Options are re-typed with `plugin`'s schema.
std::unique_ptr<PinnedContext> open_pinned(const std::string& pin_root,
                                           const std::string& instance,
                                           const InstanceState& state,
                                           const Plugin& plugin);

}  // namespace bpfmgr
