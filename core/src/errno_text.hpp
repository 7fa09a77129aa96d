// strerror for an errno value, the way every message of the core words it.
#pragma once

#include <cstring>
#include <string>

namespace bpfmgr {

// strerror for a positive or negative errno value.
inline std::string errno_text(int err) {
  if (err < 0) err = -err;
  return std::strerror(err);
}

}  // namespace bpfmgr
