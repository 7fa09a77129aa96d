// The check `unpin`, `status` and `events` make before reading a pin root,
// in one place: a pin root that cannot be one (relative, a symlink, not on
// bpffs) is a usage error (exit 2); one this user cannot read, or whose pins
// bpf() refuses to open, is "permission denied" (exit 1), never "nothing
// pinned" and never a lock error from /run.
#pragma once

#include <string>
#include <vector>

namespace bpfmgr {

// Checks `pin_root` for reading the instances `names` (every entry under it
// when empty). Prints the reason on stderr and returns its exit code, or
// kExitOk (commands.hpp) when the command may go on.
int check_pin_root_access(const std::string& pin_root, const std::vector<std::string>& names);

}  // namespace bpfmgr
