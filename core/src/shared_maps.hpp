// Map definitions compared: a shared map against its owner's, a kept map
// against its pinned self. Load compares with the kernel's maps; validate
// (shared_map_problems) with the owner's object after its before_load,
// by the same rule (map_mismatch).
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "manifest.hpp"
#include "resolve.hpp"

namespace bpfmgr {

struct MapDef {
  std::uint32_t type, key, value, max_entries;
};

// The definition of a loaded map, by fd.
std::optional<MapDef> pinned_map_def(int fd);

// "" when compatible, else what differs.
std::string map_mismatch(bpf_map* map, const MapDef& pinned);

// Shared maps whose definitions differ once both plugins' before_load ran
// (type, key and value size, max_entries): the one check validate and load
// both make, with the manifest position of each share. Touches no kernel
// state (objects are opened, never loaded).
struct SharedMapProblem {
  std::string instance;
  SourcePos pos;
  std::string message;
};
std::vector<SharedMapProblem> shared_map_problems(const ResolvedManifest& manifest);

}  // namespace bpfmgr
