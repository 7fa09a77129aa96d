#include "shared_maps.hpp"

#include <map>
#include <memory>
#include <set>

#include "instance_object.hpp"
#include "object_spec.hpp"

namespace bpfmgr {

std::vector<SharedMapProblem> shared_map_problems(const ResolvedManifest& rm) {
  std::vector<SharedMapProblem> out;
  std::set<std::string> involved;
  for (auto& r : rm.instances)
    for (auto& share : r.spec->maps) {
      involved.insert(r.spec->name);
      involved.insert(share.instance);
    }
  if (involved.empty()) return out;
  PinLayout layout(rm.manifest.pin_root.empty() ? "/" : rm.manifest.pin_root);
  std::map<std::string, ObjectSpec> specs;
  for (auto& r : rm.instances) {
    if (!involved.count(r.spec->name)) continue;
    try {
      InstanceObject object(r, layout);
      object.prepare();
      specs[r.spec->name] = object.spec();
    } catch (const std::exception& e) {
      out.push_back({r.spec->name, r.spec->plugin_pos, e.what()});
    }
  }
  for (auto& r : rm.instances)
    for (auto& share : r.spec->maps) {
      auto mine = specs.find(r.spec->name), theirs = specs.find(share.instance);
      if (mine == specs.end() || theirs == specs.end()) continue;
      auto* a = mine->second.map(share.map);
      auto* b = theirs->second.map(share.remote_map);
      if (!a || !b) continue;  // resolve reported it
      if (auto why = map_mismatch(*a, *b); !why.empty())
        out.push_back({r.spec->name, share.pos,
                       "map '" + share.map + "' of instance '" + r.spec->name +
                           "' cannot be instance '" + share.instance + "''s map '" +
                           share.remote_map + "': " + why +
                           " (after both plugins' before_load)"});
    }
  return out;
}

}  // namespace bpfmgr
