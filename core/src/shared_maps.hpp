// Shared maps checked before anything is loaded (validate, and load before
// it starts): each sharer's map against its owner's, both read after their
// plugin's before_load, by the rule load applies to the kernel's map
// (map_mismatch, object_spec.hpp).
#pragma once

#include <string>
#include <vector>

#include "manifest.hpp"
#include "resolve.hpp"

namespace bpfmgr {

// Shared maps whose definitions differ once both plugins' before_load ran
// (type, key and value size, max_entries, flags): the one check validate and load
// both make, with the manifest position of each share. Touches no kernel
// state (objects are opened, never loaded).
struct SharedMapProblem {
  std::string instance;
  SourcePos pos;
  std::string message;
};
std::vector<SharedMapProblem> shared_map_problems(const ResolvedManifest& manifest);

}  // namespace bpfmgr
