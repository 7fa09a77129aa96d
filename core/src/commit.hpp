// The commit of a staged instance and the recovery of one a crash
// interrupted. A load writes the journal (PinLayout::journal) naming every
// instance it is about to commit, before the first rename; the pins still
// in staging are then exactly what remains to do. The next load or unpin,
// under the pin root's lock, finishes every commit the journal names and
// reverts every other staging directory (links switched in place go back
// to the programs still pinned in the instance directory).
#pragma once

#include <bpf/bpf.h>

#include <optional>
#include <string>
#include <vector>

#include "handles.hpp"
#include "pin_layout.hpp"
#include "state.hpp"

namespace bpfmgr {


// What a staged instance makes outlive the load: its pins, by name (fds the
// caller keeps open), and the attachments no fd holds (a program on a
// sockmap before Linux 6.10's sockmap links), which only write_staged makes.
struct StagedObjects {
  struct Pin {
    std::string name;
    int fd;
  };
  std::vector<Pin> maps, progs, links;
  struct MapAttachment {
    Fd prog, map;
    bpf_attach_type type;
    std::string prog_name, map_name;
    bool made = false;  // set once attached: a rollback detaches it
  };
  std::vector<MapAttachment> attachments;
};

// Writes the staging directory `dir`: created (`created` is set once it is,
// for a rollback to remove it), the record first (it makes the directory
// bpfmgr's for recovery), then the pins, then the attachments, each made
// only once the record names it. Throws Error naming what failed.
void write_staged(const InstancePaths& dir, const InstanceState& record,
                  StagedObjects& objects, bool& created);

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
