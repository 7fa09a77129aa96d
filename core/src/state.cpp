#include "state.hpp"

#include <unistd.h>

#include <filesystem>
#include <vector>

#include "manifest.hpp"
#include "pin_layout.hpp"
#include "pin_txn.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

nlohmann::json to_json(const InstanceState& s) {
  nlohmann::json j;
  j["format"] = s.format;
  j["instance"] = s.instance;
  j["plugin"] = s.plugin;
  j["plugin_version"] = s.plugin_version;
  j["plugin_path"] = s.plugin_path;
  j["plugin_sha256"] = s.plugin_sha256;
  j["api_version"] = s.api_version;
  j["before_unpin"] = s.before_unpin;
  j["manifest_path"] = s.manifest_path;
  j["manifest_hash"] = s.manifest_hash;
  j["config_hash"] = s.config_hash;
  if (!s.input_fingerprint.empty()) j["input_fingerprint"] = s.input_fingerprint;
  j["loaded_at"] = s.loaded_at;
  j["options"] = s.options;
  j["maps"] = s.maps;
  j["progs"] = s.progs;
  j["prog_ids"] = s.prog_ids;
  j["prog_tags"] = s.prog_tags;
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
  if (!s.degraded.empty()) j["degraded"] = degraded_json(s.degraded);
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
  s.before_unpin = j.value("before_unpin", true);
  s.manifest_path = j.value("manifest_path", "");
  s.manifest_hash = j.value("manifest_hash", "");
  s.config_hash = j.value("config_hash", "");
  s.input_fingerprint = j.value("input_fingerprint", "");
  s.loaded_at = j.value("loaded_at", "");
  s.options = j.value("options", nlohmann::json::object());
  s.maps = j.value("maps", std::vector<std::string>{});
  s.progs = j.value("progs", std::vector<std::string>{});
  s.prog_ids = j.value("prog_ids", std::map<std::string, std::uint32_t>{});
  s.prog_tags = j.value("prog_tags", std::map<std::string, std::string>{});
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
  s.degraded = degraded_from_json(j.value("degraded", nlohmann::json::array()));
  return s;
}

std::string record_problem(const InstanceState& s, const std::string& state_path) {
  // <root>/<dir>/state, where <dir> is the instance or _staging-<instance>.
  fs::path dir = fs::path(state_path).parent_path();
  std::string entry = dir.filename().string();
  std::string expected = PinLayout::staged_instance(entry).value_or(entry);
  PinLayout layout(dir.parent_path().string());
  auto instance = [](const std::string& what, const std::string& n) -> std::string {
    return valid_instance_name(n) ? "" : what + " '" + n + "' is not a valid instance name";
  };
  auto name = [](const std::string& what, const std::string& n) -> std::string {
    auto why = pin_name_problem(n);
    return why.empty() ? "" : what + ": " + why;
  };
  auto first = [](std::initializer_list<std::string> whys) {
    for (auto& w : whys)
      if (!w.empty()) return w;
    return std::string();
  };
  if (auto w = instance("the instance", s.instance); !w.empty()) return w;
  if (s.instance != expected)
    return "it names instance '" + s.instance + "' but lies in " + dir.string();
  if (!s.plugin_path.empty() &&
      (s.plugin_path[0] != '/' || fs::path(s.plugin_path).lexically_normal() != s.plugin_path))
    return "plugin path '" + s.plugin_path + "' is not a normal absolute path";
  for (auto& m : s.maps)
    if (auto w = name("map", m); !w.empty()) return w;
  for (auto& p : s.progs)
    if (auto w = name("program", p); !w.empty()) return w;
  for (auto& [p, id] : s.prog_ids)
    if (auto w = name("program", p); !w.empty()) return w;
  for (auto& [p, tag] : s.prog_tags)
    if (auto w = name("program", p); !w.empty()) return w;
  for (auto& l : s.links)
    if (auto w = first({name("link", l.name), name("link program", l.prog)}); !w.empty())
      return w;
  for (auto& h : s.hooks)
    if (auto w = name("hook program", h.prog); !w.empty()) return w;
  // A map pin read from a record is followed (opened, detached from) only
  // where bpfmgr puts map pins: <root>/<instance>/maps/<map>.
  auto map_pin = [&](const std::string& pin) -> std::string {
    fs::path p(pin);
    auto owner = p.parent_path().parent_path().filename().string();
    auto map = p.filename().string();
    if (!valid_instance_name(owner) || !pin_name_problem(map).empty() ||
        layout.instance(owner).map(map) != pin)
      return "map pin '" + pin + "' is not a map of an instance under " + layout.root();
    return "";
  };
  for (auto& m : s.shared_maps) {
    if (auto w = first({name("shared map", m.map), instance("shared map owner", m.instance)});
        !w.empty())
      return w;
    if (auto w = map_pin(m.pin); !w.empty()) return w;
  }
  for (auto& a : s.map_attachments) {
    if (auto w = name("attached program", a.prog); !w.empty()) return w;
    if (auto w = map_pin(a.map_pin); !w.empty()) return w;
  }
  return "";
}

namespace {

// What one read of the record says: its state when the text is a record
// that can be trusted, else why not.
StateLookup record_from_text(const std::string& text, const std::string& path) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return {StateLookup::Corrupt, std::nullopt, "its state record is damaged: not JSON"};
  try {
    if (!j.is_object() || !j.contains("instance"))
      return {StateLookup::Corrupt, std::nullopt, "its state record is not a bpfmgr record"};
    auto state = state_from_json(j);
    // Records are input: a name that could lead outside its instance
    // makes the whole record untrusted, and nothing in it is followed.
    if (auto why = record_problem(state, path); !why.empty())
      return {StateLookup::Corrupt, std::nullopt,
              "WARNING: its state record was tampered with or damaged (" + why +
                  "); bpfmgr follows none of its names"};
    return {StateLookup::Valid, std::move(state), ""};
  } catch (const std::exception& e) {
    return {StateLookup::Corrupt, std::nullopt,
            std::string("its state record is damaged: ") + e.what()};
  }
}

}  // namespace

StateLookup lookup_state(const std::string& path) {
  // A load rewrites an unchanged instance's record in place (its input
  // fingerprint) under the pin root's lock, and an array map's value is
  // copied without one: a reader that takes no lock (status, metrics) can
  // see half of each. Such a read usually does not parse, but it can: the
  // head of one version and the tail of the other may be JSON that is not
  // a record (a key cut out). So any read that is not a good record is
  // read again, a moment later; only one that stays bad is reported.
  StateLookup result;
  for (int attempt = 0;; ++attempt) {
    auto raw = read_record(path);
    if (raw.kind != StateLookup::Valid && raw.kind != StateLookup::Corrupt)
      return {raw.kind, std::nullopt, raw.text_or_why};
    result = raw.kind == StateLookup::Valid ? record_from_text(raw.text_or_why, path)
                                            : StateLookup{raw.kind, std::nullopt, raw.text_or_why};
    if (result.kind == StateLookup::Valid || attempt == 4) return result;
    ::usleep(1000);
  }
}

std::optional<InstanceState> read_state(const std::string& path) {
  return lookup_state(path).state;
}

}  // namespace bpfmgr
