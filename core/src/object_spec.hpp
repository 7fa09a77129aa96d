// What a BPF object declares, as pure data: its maps and programs, read
// from an opened, never loaded, object (an instance's, instance_object.hpp,
// or a plugin's as built), and the one rule for a map that must be another.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct bpf_map;
struct bpf_object;

namespace bpfmgr {

struct LoadedPlugin;

struct MapSpec {
  std::string name;
  std::uint32_t type = 0;  // bpf_map_type
  std::uint32_t key_size = 0, value_size = 0, max_entries = 0, flags = 0;
};

struct ProgramSpec {
  std::string name;
  std::uint32_t type = 0;  // bpf_prog_type
  bool autoload = true;    // as built (SEC("?...") is not)

  // Tracepoint, kprobe/uprobe and perf_event programs attach through a
  // perf event; their link outlives bpfmgr only as a pinned BPF perf_event
  // link (Linux 5.15+). Before, libbpf attaches them with an ioctl that
  // has no link to pin.
  bool attaches_through_perf_event() const;
};

struct ObjectSpec {
  // Sorted by name; libbpf's internal .data/.rodata/.bss maps left out
  // (they are never pinned or shared).
  std::vector<MapSpec> maps;
  std::vector<ProgramSpec> programs;  // in the object's order

  const MapSpec* map(std::string_view name) const;
  // " a b" (or " (none)"): for hints.
  std::string map_names() const;
};

MapSpec map_spec(const bpf_map* map);
ObjectSpec object_spec(const bpf_object* obj);
// The kernel's definition of a loaded map (a pinned one, or a sharer's
// owner), by fd.
std::optional<MapSpec> loaded_map_spec(int fd);

// The one rule for a map that must be another (a shared map and its
// owner's, a kept map and its pinned self): "" when `mine` can be
// `theirs`, else the first difference (type, key size, value size, max
// entries, map flags), "mine vs theirs".
std::string map_mismatch(const MapSpec& mine, const MapSpec& theirs);

// A plugin's object as built, before any before_load, for questions asked
// without an instance (`bpfmgr plugins`); std::nullopt when libbpf cannot
// open it. An instance's spec is its InstanceObject's (instance_object.hpp).
std::optional<ObjectSpec> plugin_object_spec(const LoadedPlugin& plugin);

}  // namespace bpfmgr
