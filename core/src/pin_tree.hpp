// Removing pins from bpffs: shared by the load transaction (staging,
// rollback) and unpin.
#pragma once

#include <string>

#include "state.hpp"

namespace bpfmgr {

// Staging directories: bpffs refuses names containing '.', and instance
// names cannot start with '_'.
inline constexpr const char* kStagingPrefix = "_staging-";

// Removes a pin or a directory of pins (dropping the kernel references
// they hold); logs, never throws.
void remove_tree(const std::string& path);
// Links go first so programs stop running before their maps lose a pin.
void remove_instance_dir(const std::string& dir);
// Undoes an attachment made without a link (bpf_prog_attach on a sockmap,
// pre-6.10 kernels), through the pins of the program in `instance_dir` and
// of the map. Returns false, with errno set, when it could not.
bool detach_map_attachment(const std::string& instance_dir,
                           const MapAttachmentRecord& attachment);

}  // namespace bpfmgr
