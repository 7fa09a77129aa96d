// The commit of a staged instance and the recovery of one a crash
// interrupted. A load writes the journal (PinLayout::journal) naming every
// instance it is about to commit, before the first rename; the pins still
// in staging are then exactly what remains to do. The next load or unpin,
// under the pin root's lock, finishes every commit the journal names and
// reverts every other staging directory (links switched in place go back
// to the programs still pinned in the instance directory).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "pin_layout.hpp"
#include "state.hpp"

namespace bpfmgr {

// One staged instance to commit: its name, the record staged with it and
// the record of the version it replaces (none for a new instance).
struct StagedInstance {
  const std::string& name;
  const InstanceState& staged;
  const std::optional<InstanceState>& old;
};

// The commit of a load: the journal naming every instance in `staged`
// (with the manifest's path) is written first, then each is moved into
// place (commit_staged), then the journal is removed. What fails is
// appended to `errors`, and the journal then stays for the next load or
// unpin to finish.
void commit_instances(const PinLayout& layout, const std::string& manifest_path,
                      const std::vector<StagedInstance>& staged,
                      std::vector<std::string>& errors);

// Moves instance `name` from staging into place. A new instance is one
// rename of the whole directory; an update renames maps, programs, links
// (replacing a link pin detaches the old link), removes what `old` had and
// `staged` has not, and moves the record last. Idempotent: safe to run
// again after a crash half-way. Throws Error naming what failed.
void commit_staged(const PinLayout& layout, const std::string& name,
                   const InstanceState& staged, const std::optional<InstanceState>& old);

// Undoes an uncommitted staging of `name`: links of the instance directory
// switched to staged programs go back to the pinned ones, non-link
// attachments of staged programs are detached, the staging directory is
// removed. Appends failures to `errors`.
void revert_staged(const PinLayout& layout, const std::string& name,
                   std::vector<std::string>& errors);

// Why the staging directory of `name` is left alone ("" when recovery
// handles it): not a directory, or holding entries bpfmgr did not make.
std::string staging_left_alone(const PinLayout& layout, const std::string& name);

// Finishes or reverts what a process that died left under the pin root
// (the caller holds the lock). Returns one line per instance handled.
std::vector<std::string> recover_pin_root(const PinLayout& layout,
                                          std::vector<std::string>& errors);

}  // namespace bpfmgr
