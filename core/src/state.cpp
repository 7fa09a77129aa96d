#include "state.hpp"

#include <bpf/bpf.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <bpfmgr/plugin.hpp>

#include "handles.hpp"
#include "system.hpp"

namespace bpfmgr {

namespace {
// Big enough for any realistic record (option lists of CIDRs included);
// the write fails loudly if a record ever outgrows it.
constexpr std::uint32_t kStateValueSize = 64 * 1024;
}  // namespace

nlohmann::json to_json(const InstanceState& s) {
  nlohmann::json j;
  j["format"] = s.format;
  j["instance"] = s.instance;
  j["plugin"] = s.plugin;
  j["plugin_version"] = s.plugin_version;
  j["plugin_path"] = s.plugin_path;
  j["plugin_sha256"] = s.plugin_sha256;
  j["api_version"] = s.api_version;
  j["manifest_path"] = s.manifest_path;
  j["manifest_hash"] = s.manifest_hash;
  j["config_hash"] = s.config_hash;
  j["loaded_at"] = s.loaded_at;
  j["options"] = s.options;
  j["maps"] = s.maps;
  j["progs"] = s.progs;
  j["complete"] = s.complete;
  auto& sm = j["shared_maps"] = nlohmann::json::array();
  for (auto& m : s.shared_maps)
    sm.push_back({{"map", m.map}, {"instance", m.instance}, {"pin", m.pin}});
  auto& links = j["links"] = nlohmann::json::array();
  for (auto& l : s.links)
    links.push_back({{"name", l.name}, {"prog", l.prog}, {"target", l.target}});
  auto& ma = j["map_attachments"] = nlohmann::json::array();
  for (auto& a : s.map_attachments)
    ma.push_back({{"prog", a.prog}, {"map_pin", a.map_pin},
                  {"attach_type", a.attach_type}});
  auto& hooks = j["hooks"] = nlohmann::json::array();
  for (auto& h : s.hooks)
    hooks.push_back({{"prog", h.prog}, {"target", h.target}, {"live", h.live},
                     {"reason", h.reason}});
  return j;
}

InstanceState state_from_json(const nlohmann::json& j) {
  InstanceState s;
  s.format = j.value("format", 1);
  s.instance = j.value("instance", "");
  s.plugin = j.value("plugin", "");
  s.plugin_version = j.value("plugin_version", "");
  s.plugin_path = j.value("plugin_path", "");
  s.plugin_sha256 = j.value("plugin_sha256", "");
  s.api_version = j.value("api_version", "");
  s.manifest_path = j.value("manifest_path", "");
  s.manifest_hash = j.value("manifest_hash", "");
  s.config_hash = j.value("config_hash", "");
  s.loaded_at = j.value("loaded_at", "");
  s.options = j.value("options", nlohmann::json::object());
  s.maps = j.value("maps", std::vector<std::string>{});
  s.progs = j.value("progs", std::vector<std::string>{});
  s.complete = j.value("complete", false);
  for (auto& m : j.value("shared_maps", nlohmann::json::array()))
    s.shared_maps.push_back({m.value("map", ""), m.value("instance", ""),
                             m.value("pin", "")});
  for (auto& l : j.value("links", nlohmann::json::array()))
    s.links.push_back(
        {l.value("name", ""), l.value("prog", ""), l.value("target", "")});
  for (auto& a : j.value("map_attachments", nlohmann::json::array()))
    s.map_attachments.push_back({a.value("prog", ""), a.value("map_pin", ""),
                                 a.value("attach_type", 0)});
  for (auto& h : j.value("hooks", nlohmann::json::array()))
    s.hooks.push_back({h.value("prog", ""), h.value("target", ""),
                       h.value("live", false), h.value("reason", "")});
  return s;
}

void write_state(const std::string& dir, const InstanceState& state) {
  auto path = dir + "/" + kStatePinName;
  std::string text = to_json(state).dump();
  if (text.size() + 4 > kStateValueSize)
    throw Error("state record of '" + state.instance + "' is too large (" +
                std::to_string(text.size()) + " bytes)");
  Fd fd(bpf_obj_get(path.c_str()));
  if (!fd) {
    LIBBPF_OPTS(bpf_map_create_opts, opts);
    fd.reset(bpf_map_create(BPF_MAP_TYPE_ARRAY, "bpfmgr_state", 4,
                            kStateValueSize, 1, &opts));
    if (!fd) throw Error("cannot create state map: " + errno_text(errno));
    if (bpf_obj_pin(fd.get(), path.c_str()) != 0)
      throw Error("cannot pin state map at " + path + ": " + errno_text(errno));
  }
  std::vector<char> value(kStateValueSize, 0);
  std::uint32_t len = text.size();
  std::memcpy(value.data(), &len, 4);
  std::memcpy(value.data() + 4, text.data(), text.size());
  std::uint32_t key = 0;
  if (bpf_map_update_elem(fd.get(), &key, value.data(), BPF_ANY) != 0)
    throw Error("cannot write state record at " + path + ": " +
                errno_text(errno));
}

std::optional<InstanceState> read_state(const std::string& dir) {
  auto path = dir + "/" + kStatePinName;
  Fd fd(bpf_obj_get(path.c_str()));
  if (!fd) return std::nullopt;
  bpf_map_info info{};
  std::uint32_t info_len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &info_len) != 0 ||
      info.value_size < 4)
    return std::nullopt;
  std::vector<char> value(info.value_size);
  std::uint32_t key = 0;
  if (bpf_map_lookup_elem(fd.get(), &key, value.data()) != 0)
    return std::nullopt;
  std::uint32_t len;
  std::memcpy(&len, value.data(), 4);
  if (len == 0 || len > info.value_size - 4) return std::nullopt;
  try {
    return state_from_json(
        nlohmann::json::parse(std::string(value.data() + 4, len)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace bpfmgr
