// Removing pins from bpffs: shared by the load transaction (staging,
// rollback, recovery) and unpin. Only directories bpfmgr owns are handed
// here, and nothing is followed: entries are removed relative to a
// directory opened with O_NOFOLLOW, symlinks are unlinked (never resolved),
// and unexpected subdirectories are left and reported.
#pragma once

#include <string>
#include <vector>

#include "pin_layout.hpp"
#include "state.hpp"

namespace bpfmgr {

// Removes an instance or staging directory: links/ first (programs stop
// running before their maps lose a pin), then progs/, maps/, a record
// replacement a crash left, the state record last (so a crash half-way
// leaves a directory that is still recognisably bpfmgr's), then the
// directory. What cannot be removed is
// appended to `errors`. Returns true when the directory is gone.
bool remove_owned_dir(const InstancePaths& dir, std::vector<std::string>& errors);

// A directory bpfmgr's own interrupted step left with no record: nothing
// in it, or only empty links/, progs/, maps/ (a staging directory a crash
// caught between its mkdir and its record, or after its commit moved the
// record out; an instance directory between unpin removing its record and
// the directory). Holds nothing, so it is removed whoever made it.
bool is_empty_leftover(const std::string& dir);
// Removes such a directory; false (and nothing removed that held
// anything) when it is not one, or something was put in it meanwhile.
bool remove_empty_leftover(const std::string& dir);

// What is pinned in an instance or staging directory, by kind: names,
// sorted, read without following anything (so status and unpin can say
// what a crashed load left and what they removed).
struct PinnedNames {
  std::vector<std::string> links, progs, maps;
  bool empty() const { return links.empty() && progs.empty() && maps.empty(); }
  // "links: a; programs: a, b; maps: m", or "nothing pinned".
  std::string summary() const;
};
PinnedNames list_pins(const InstancePaths& dir);

// Undoes an attachment made without a link (bpf_prog_attach on a sockmap,
// pre-6.10 kernels), through the pin of the program in `instance` and of
// the map. Returns false, with errno set, when it could not.
bool detach_map_attachment(const InstancePaths& instance,
                           const MapAttachmentRecord& attachment);

}  // namespace bpfmgr
