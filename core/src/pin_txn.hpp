// Everything a load makes durable under the pin root, in the order it
// happens: the records (one-entry array maps bpfmgr pins: an instance's
// state, the journal), a staged instance's directory (its record first,
// then its pins, then the attachments no fd holds), the journal naming
// every instance about to be committed, the renames into place; and the
// recovery of what a crash interrupted. The next load or unpin, under the
// pin root's lock, finishes every commit the journal names and reverts
// every other staging directory (links switched in place go back to the
// programs still pinned in the instance directory).
#pragma once

#include <bpf/bpf.h>

#include <optional>
#include <string>
#include <vector>

#include "handles.hpp"
#include "pin_layout.hpp"
#include "state.hpp"

namespace bpfmgr {

// ---- Record maps: where records live (state.hpp says what they hold)

// Writes the record of directory `at` (its state()): a map sized to the
// record, pinned once written. A record already there is rewritten in
// place when the new text fits it, else replaced whole (a new map pinned
// at state_replacement(), then renamed over it). Throws bpfmgr::Error.
void write_state(const InstancePaths& at, const InstanceState& state);
// Whether `path` pins a map bpfmgr made for a record (a state record, its
// replacement, the journal): an array map named bpfmgr_state.
bool is_record_pin(const std::string& path);
// The JSON text of the record map pinned at `path` (kind Valid), or why
// there is none: Absent, Foreign (not a record map), Corrupt (unreadable).
struct RawRecord {
  StateLookup::Kind kind = StateLookup::Absent;
  std::string text_or_why;
};
RawRecord read_record(const std::string& path);

// The commit journal (PinLayout::journal()): which staged instances a load
// had started to commit. Same kind of map as the state record.
struct Journal {
  std::vector<std::string> committing;
  std::string manifest_path;
  int pid = 0;
};
void write_journal(const std::string& path, const Journal& j);
std::optional<Journal> read_journal(const std::string& path);

// ---- The load's transaction on the pin root

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
    // The previous version's program there, which this one replaces (a
    // sockmap runs one program per type; attaching swaps it).
    Fd replaced;
    bool made = false;  // set once attached: a rollback undoes it
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
