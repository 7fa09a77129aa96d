// Where bpfmgr pins an instance's state record, maps, programs and links
// under a pin root (docs/pin-layout.md), as the functions the core's
// PinLayout is built on: for code beside bpfmgr that has no plugin context,
// such as benchmark harnesses (bpfmgr::bench::LoadedManifest), tests and
// tools. A plugin asks its context instead (map_pin_path(), ...), whose
// answer also knows that a shared map is pinned by its owner.
// Header-only, standard C++.
#pragma once

#include <string>
#include <string_view>

namespace bpfmgr {

enum class PinKind { Map, Prog, Link };

namespace pin_paths {

// <pin_root>/<instance>; a staging directory has the same shape.
inline std::string instance_dir(std::string_view pin_root, std::string_view instance) {
  std::string dir(pin_root);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir + (dir == "/" ? "" : "/") + std::string(instance);
}

// <instance_dir>/maps, /progs or /links
inline std::string kind_dir(std::string_view instance_dir, PinKind kind) {
  const char* sub = kind == PinKind::Map ? "/maps" : kind == PinKind::Prog ? "/progs" : "/links";
  return std::string(instance_dir) + sub;
}

// <instance_dir>/maps/<name>, /progs/<name>, /links/<name>
inline std::string pin(std::string_view instance_dir, PinKind kind, std::string_view name) {
  return kind_dir(instance_dir, kind) + "/" + std::string(name);
}

// <instance_dir>/state, the instance's state record
inline std::string state(std::string_view instance_dir) {
  return std::string(instance_dir) + "/state";
}

}  // namespace pin_paths
}  // namespace bpfmgr
