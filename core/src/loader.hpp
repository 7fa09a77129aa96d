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

#include "plugins.hpp"
#include "resolve.hpp"
#include "state.hpp"

namespace bpfmgr {

struct LoadOptions {
  // Run the verifier on every program, pin and attach nothing.
  bool dry_run = false;
  // Recreate maps instead of keeping pinned contents on update.
  bool reset_maps = false;
};

struct LoadReport {
  std::vector<std::string> loaded;     // new instances
  std::vector<std::string> updated;    // changed and replaced
  std::vector<std::string> unchanged;  // same config, nothing done
  std::vector<std::string> removed;    // gone from this manifest: unpinned
  std::vector<std::string> verified;   // dry run: passed the verifier
};

// Throws bpfmgr::Error (after rolling back) on any failure.
LoadReport load_manifest(const ResolvedManifest& manifest,
                         const LoadOptions& options);

// Instance directories under a pin root (names; staging dirs excluded).
std::vector<std::string> list_instances(const std::string& pin_root);

// Removes one instance: runs the plugin's before_unpin (best effort),
// detaches non-link attachments, removes every pin in its directory and its
// staging directory. Works without a state record (crash half-way).
void unpin_instance(const std::string& pin_root, const std::string& instance,
                    PluginRegistry& registry);
// Removes every instance and the stale staging directories, then the pin
// root itself when it is empty.
std::vector<std::string> unpin_all(const std::string& pin_root,
                                   PluginRegistry& registry);

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
