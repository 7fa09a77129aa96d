#include "object_spec.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cstdio>

#include "handles.hpp"
#include "plugins.hpp"
#include "instance_object.hpp"

namespace bpfmgr {

const MapSpec* ObjectSpec::map(std::string_view name) const {
  auto it = std::lower_bound(maps.begin(), maps.end(), name,
                             [](const MapSpec& m, std::string_view n) { return m.name < n; });
  return it != maps.end() && it->name == name ? &*it : nullptr;
}

std::string ObjectSpec::map_names() const {
  std::string s;
  for (auto& m : maps) s += " " + m.name;
  return s.empty() ? std::string(" (none)") : s;
}

bool ProgramSpec::attaches_through_perf_event() const {
  return type == BPF_PROG_TYPE_TRACEPOINT || type == BPF_PROG_TYPE_KPROBE ||
         type == BPF_PROG_TYPE_PERF_EVENT;
}

MapSpec map_spec(const bpf_map* m) {
  return {bpf_map__name(m),         bpf_map__type(m),        bpf_map__key_size(m),
          bpf_map__value_size(m),   bpf_map__max_entries(m), bpf_map__map_flags(m)};
}

ObjectSpec object_spec(const bpf_object* obj) {
  ObjectSpec out;
  bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    if (!bpf_map__is_internal(m)) out.maps.push_back(map_spec(m));
  }
  bpf_program* p;
  bpf_object__for_each_program(p, obj) {
    out.programs.push_back(
        {bpf_program__name(p), bpf_program__type(p), bpf_program__autoload(p)});
  }
  std::sort(out.maps.begin(), out.maps.end(),
            [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

std::optional<MapSpec> loaded_map_spec(int fd) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return std::nullopt;
  return MapSpec{info.name, info.type, info.key_size, info.value_size, info.max_entries,
                 info.map_flags};
}

std::string map_mismatch(const MapSpec& mine, const MapSpec& theirs) {
  auto name = [](std::uint32_t t) {
    auto s = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(t));
    return std::string(s ? s : "?");
  };
  if (mine.type != theirs.type) return "type " + name(mine.type) + " vs " + name(theirs.type);
  if (mine.key_size != theirs.key_size)
    return "key size " + std::to_string(mine.key_size) + " vs " +
           std::to_string(theirs.key_size);
  if (mine.value_size != theirs.value_size)
    return "value size " + std::to_string(mine.value_size) + " vs " +
           std::to_string(theirs.value_size);
  if (mine.max_entries != theirs.max_entries)
    return "max entries " + std::to_string(mine.max_entries) + " vs " +
           std::to_string(theirs.max_entries);
  if (mine.flags != theirs.flags) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "flags 0x%x vs 0x%x", mine.flags, theirs.flags);
    return buf;
  }
  return {};
}

std::optional<ObjectSpec> plugin_object_spec(const LoadedPlugin& p) {
  auto obj = open_plugin_object(p);
  if (!obj) return std::nullopt;
  return object_spec(obj.get());
}

}  // namespace bpfmgr
