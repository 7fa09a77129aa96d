#include "state.hpp"

#include <bpf/bpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include <bpfmgr/plugin.hpp>

#include "handles.hpp"
#include "manifest.hpp"
#include "pin_layout.hpp"
#include "errno_text.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {
// The largest record map value: any realistic record (option lists of
// CIDRs included) fits; a write fails loudly if one ever outgrows it.
constexpr std::size_t kMaxRecordValueSize = 64 * 1024;
// Room for the input fingerprint a no-op reload adds in place (loader.cpp).
constexpr std::size_t kRecordSlack = 128;
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

namespace {
constexpr const char* kRecordMapName = "bpfmgr_state";

// A record map's value: the text's length (4 bytes), the text, zeroes.
// Sized to the text (copying 64 KiB in and out for a 2 KiB record was
// most of a record's cost) plus room for the fingerprint a no-op reload
// adds in place, in steps of 256 bytes, capped at 64 KiB. A staged record
// is written once, complete (commit.hpp, write_staged).
struct RecordMap {
  Fd fd;
  std::uint32_t value_size = 0;
};

RecordMap create_record_map(const std::string& text, const std::string& path) {
  if (4 + text.size() > kMaxRecordValueSize)
    throw Error("record " + path + " is too large (" + std::to_string(text.size()) +
                " bytes)");
  auto size = std::min((4 + text.size() + kRecordSlack + 255) / 256 * 256,
                       kMaxRecordValueSize);
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  RecordMap map{Fd(bpf_map_create(BPF_MAP_TYPE_ARRAY, kRecordMapName, 4, size, 1, &opts)),
                std::uint32_t(size)};
  if (!map.fd) throw Error("cannot create state map: " + errno_text(errno));
  return map;
}

// What is pinned at `path`: no fd when nothing (or no BPF object) is; a
// value size of 0 when it is not a record map.
RecordMap open_record(const std::string& path) {
  RecordMap map{Fd(bpf_obj_get(path.c_str()))};
  bpf_map_info info{};
  std::uint32_t info_len = sizeof(info);
  if (map.fd && bpf_obj_get_info_by_fd(map.fd.get(), &info, &info_len) == 0 &&
      info.type == BPF_MAP_TYPE_ARRAY && std::string_view(info.name) == kRecordMapName &&
      info.key_size == 4 && info.value_size >= 4)
    map.value_size = info.value_size;
  return map;
}

void write_record(const RecordMap& map, const std::string& text, const std::string& path) {
  std::vector<char> value(map.value_size, 0);
  std::uint32_t len = text.size();
  std::memcpy(value.data(), &len, 4);
  std::memcpy(value.data() + 4, text.data(), text.size());
  std::uint32_t key = 0;
  if (bpf_map_update_elem(map.fd.get(), &key, value.data(), BPF_ANY) != 0)
    throw Error("cannot write record " + path + ": " + errno_text(errno));
}

// The record's JSON text, or why there is none.
struct RawRecord {
  StateLookup::Kind kind = StateLookup::Absent;
  std::string text_or_why;
};

RawRecord read_record(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return {StateLookup::Absent, "no state record"};
  if (S_ISLNK(st.st_mode)) return {StateLookup::Foreign, "its state record is a symlink"};
  auto map = open_record(path);
  if (!map.fd) return {StateLookup::Foreign, "its 'state' is not a BPF map"};
  auto value_size = map.value_size;
  if (!value_size) return {StateLookup::Foreign, "its 'state' is not a bpfmgr state record"};
  // Not zeroed: the lookup fills all of it.
  auto value = std::make_unique_for_overwrite<char[]>(value_size);
  std::uint32_t key = 0;
  if (bpf_map_lookup_elem(map.fd.get(), &key, value.get()) != 0)
    return {StateLookup::Corrupt, "its state record cannot be read: " + errno_text(errno)};
  std::uint32_t len;
  std::memcpy(&len, value.get(), 4);
  if (len == 0 || len > value_size - 4)
    return {StateLookup::Corrupt, "its state record is empty or damaged"};
  return {StateLookup::Valid, std::string(value.get() + 4, len)};
}
}  // namespace

bool is_record_pin(const std::string& path) { return open_record(path).value_size != 0; }

void write_state(const InstancePaths& at, const InstanceState& state) {
  std::string text = to_json(state).dump();
  auto path = at.state();
  auto current = open_record(path);
  if (current.fd && !current.value_size)
    throw Error(path + " is not a bpfmgr state record; left alone");
  if (current.fd && 4 + text.size() <= current.value_size) {
    write_record(current, text, path);
    return;
  }
  // A new map, written in full before it is pinned: a reader never sees
  // half a record. One that outgrew its map is replaced whole: pinned
  // beside it, then renamed over it, so a crash leaves the one record or
  // the other (and maybe the replacement, which remove_owned_dir and the
  // next write remove).
  auto pin = current.fd ? at.state_replacement() : path;
  if (current.fd && open_record(pin).value_size) ::unlink(pin.c_str());
  auto map = create_record_map(text, path);
  write_record(map, text, path);
  if (bpf_obj_pin(map.fd.get(), pin.c_str()) != 0)
    throw Error("cannot pin state map at " + pin + ": " + errno_text(errno));
  if (pin != path && ::rename(pin.c_str(), path.c_str()) != 0)
    throw Error("cannot replace record " + path + ": " + errno_text(errno));
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

void write_journal(const std::string& path, const Journal& j) {
  auto text = nlohmann::json{{"journal", 1},
                             {"committing", j.committing},
                             {"manifest_path", j.manifest_path},
                             {"pid", j.pid}}
                  .dump();
  // A fresh map each time, pinned only once written: the journal appears
  // whole or not at all.
  auto map = create_record_map(text, path);
  write_record(map, text, path);
  ::unlink(path.c_str());
  if (bpf_obj_pin(map.fd.get(), path.c_str()) != 0)
    throw Error("cannot pin the commit journal at " + path + ": " + errno_text(errno));
}

std::optional<Journal> read_journal(const std::string& path) {
  auto raw = read_record(path);
  if (raw.kind != StateLookup::Valid) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(raw.text_or_why);
    Journal out;
    out.committing = j.at("committing").get<std::vector<std::string>>();
    out.manifest_path = j.value("manifest_path", "");
    out.pid = j.value("pid", 0);
    return out;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace bpfmgr
