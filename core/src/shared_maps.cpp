#include "shared_maps.hpp"

#include <bpf/bpf.h>

#include <map>
#include <memory>
#include <set>

#include "instance_txn.hpp"

namespace bpfmgr {

std::optional<MapDef> pinned_map_def(int fd) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return std::nullopt;
  return MapDef{info.type, info.key_size, info.value_size, info.max_entries};
}

std::string map_mismatch(bpf_map* map, const MapDef& pinned) {
  auto name = [](std::uint32_t t) {
    auto s = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(t));
    return std::string(s ? s : "?");
  };
  if (bpf_map__type(map) != pinned.type)
    return "type " + name(bpf_map__type(map)) + " vs " + name(pinned.type);
  if (bpf_map__key_size(map) != pinned.key)
    return "key size " + std::to_string(bpf_map__key_size(map)) + " vs " +
           std::to_string(pinned.key);
  if (bpf_map__value_size(map) != pinned.value)
    return "value size " + std::to_string(bpf_map__value_size(map)) + " vs " +
           std::to_string(pinned.value);
  if (bpf_map__max_entries(map) != pinned.max_entries)
    return "max entries " + std::to_string(bpf_map__max_entries(map)) +
           " vs " + std::to_string(pinned.max_entries);
  return {};
}

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
  LoadOptions lo;
  lo.dry_run = true;
  std::map<std::string, std::unique_ptr<InstanceTxn>> specs;
  auto no_lookup = [](const std::string&, const std::string&) -> int { return -1; };
  for (auto& r : rm.instances) {
    if (!involved.count(r.spec->name)) continue;
    auto txn = std::make_unique<InstanceTxn>(r, rm.manifest, layout, std::nullopt, lo,
                                             no_lookup, "", [] {});
    try {
      txn->open_for_spec();
    } catch (const std::exception& e) {
      out.push_back({r.spec->name, r.spec->plugin_pos, e.what()});
      continue;
    }
    specs[r.spec->name] = std::move(txn);
  }
  for (auto& r : rm.instances)
    for (auto& share : r.spec->maps) {
      auto mine = specs.find(r.spec->name), theirs = specs.find(share.instance);
      if (mine == specs.end() || theirs == specs.end()) continue;
      auto* a = mine->second->spec_map(share.map);
      auto* b = theirs->second->spec_map(share.remote_map);
      if (!a || !b) continue;  // resolve reported it
      MapDef owner{bpf_map__type(b), bpf_map__key_size(b), bpf_map__value_size(b),
                   bpf_map__max_entries(b)};
      if (auto why = map_mismatch(a, owner); !why.empty())
        out.push_back({r.spec->name, share.pos,
                       "map '" + share.map + "' of instance '" + r.spec->name +
                           "' cannot be instance '" + share.instance + "''s map '" +
                           share.remote_map + "': " + why +
                           " (after both plugins' before_load)"});
    }
  return out;
}

}  // namespace bpfmgr
