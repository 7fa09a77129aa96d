// The side of loaded instances that any process sees through their pins:
// listing, status, the PinnedContext given to plugins, and unpin.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "handles.hpp"
#include "pinned.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <cstring>

#include "pin_txn.hpp"
#include "diagnostics.hpp"
#include "pin_tree.hpp"
#include "plugin_trust.hpp"
#include "record_json.hpp"
#include "resolve.hpp"
#include "errno_text.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

// libbpf 1.1 predates some link types the running kernel has.
std::string link_type_name(std::uint32_t type) {
  if (auto s = libbpf_bpf_link_type_str(bpf_link_type(type))) return s;
  switch (type) {
    case 10: return "netfilter";
    case 11: return "tcx";
    case 12: return "uprobe_multi";
    case 13: return "netkit";
    case 14: return "sockmap";
  }
  return "type " + std::to_string(type);
}

// Sockmap links (Linux 6.10) postdate libbpf 1.1's bpf_link_info: their
// map id is the union's first field, at offset 16.
constexpr std::uint32_t kLinkTypeSockmap = 14;
std::uint32_t sockmap_link_map_id(const bpf_link_info& info) {
  std::uint32_t id;
  std::memcpy(&id, reinterpret_cast<const char*>(&info) + 16, sizeof id);
  return id;
}

}  // namespace

ObservedPinRoot observe_pin_root(const PinLayout& layout) {
  ObservedPinRoot out;
  DIR* d = ::opendir(layout.root().c_str());
  if (!d) return out;
  out.exists = true;
  std::vector<std::string> names;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (auto& n : names) {
    struct stat st {};
    if (::lstat((layout.root() + "/" + n).c_str(), &st) != 0) continue;
    if (n == PinLayout::kJournalName) {
      out.journal = true;
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      out.foreign.push_back({n, "a symlink; never followed"});
      continue;
    }
    if (auto inst = PinLayout::staged_instance(n); inst && S_ISDIR(st.st_mode)) {
      out.staging.push_back(*inst);
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      out.foreign.push_back({n, "a pin bpfmgr did not make"});
      continue;
    }
    auto rec = lookup_state(layout.instance(n).state());
    if (rec.kind == StateLookup::Absent && is_empty_leftover(layout.instance(n).dir)) {
      out.leftovers.push_back(n);
      continue;
    }
    if (!rec.ours()) {
      out.foreign.push_back({n, "no bpfmgr state record (" + rec.why + ")"});
      continue;
    }
    out.instances.push_back(n);
    out.records.emplace(n, std::move(rec));
  }
  return out;
}

std::string link_problem(const InstancePaths& dir, const LinkRecord& l,
                         std::optional<std::uint32_t> pinned_prog_id) {
  Fd fd(bpf_obj_get(dir.link(l.name).c_str()));
  bpf_link_info info{};
  std::uint32_t len = sizeof(info);
  if (!fd || bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0)
    return "its link pin is missing (removed by hand?)";
  if (info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == 0)
    return "the link is detached (its cgroup was removed, or `bpftool link detach`)";
  if (info.type == kLinkTypeSockmap && sockmap_link_map_id(info) == 0)
    return "the link is detached from its map (`bpftool link detach`?)";
  if (!pinned_prog_id) {
    Fd prog(bpf_obj_get(dir.prog(l.prog).c_str()));
    bpf_prog_info pinfo{};
    std::uint32_t plen = sizeof(pinfo);
    if (!prog || bpf_obj_get_info_by_fd(prog.get(), &pinfo, &plen) != 0)
      return "its program's pin is missing";
    pinned_prog_id = pinfo.id;
  }
  if (*pinned_prog_id != info.prog_id)
    return "the link runs program id " + std::to_string(info.prog_id) +
           ", not the pinned '" + l.prog + "' (id " + std::to_string(*pinned_prog_id) + ")";
  return "";
}

std::string kernel_drift(const InstancePaths& dir, const InstanceState& s) {
  struct stat st {};
  for (auto& m : s.maps)
    if (::lstat(dir.map(m).c_str(), &st) != 0) return "map pin " + dir.map(m) + " is missing";
  std::map<std::string, std::uint32_t> pinned_ids;  // read once, for the links too
  for (auto& p : s.progs) {
    Fd fd(bpf_obj_get(dir.prog(p).c_str()));
    bpf_prog_info info{};
    std::uint32_t len = sizeof(info);
    if (!fd || bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0)
      return "program pin " + dir.prog(p) + " is missing";
    if (auto it = s.prog_ids.find(p); it != s.prog_ids.end() && it->second != info.id)
      return "program pin " + dir.prog(p) + " holds program id " + std::to_string(info.id) +
             ", not the one loaded (id " + std::to_string(it->second) + ")";
    pinned_ids[p] = info.id;
  }
  for (auto& sm : s.shared_maps)
    if (::lstat(sm.pin.c_str(), &st) != 0) return "shared map " + sm.pin + " is missing";
  for (auto& l : s.links) {
    std::optional<std::uint32_t> prog_id;
    if (auto it = pinned_ids.find(l.prog); it != pinned_ids.end()) prog_id = it->second;
    if (auto why = link_problem(dir, l, prog_id); !why.empty())
      return "link " + l.name + ": " + why;
  }
  for (auto& a : s.map_attachments) {
    Fd map(bpf_obj_get(a.map_pin.c_str()));
    Fd prog(bpf_obj_get(dir.prog(a.prog).c_str()));
    std::uint32_t ids[8], count = 8, flags = 0;
    bpf_prog_info pinfo{};
    std::uint32_t plen = sizeof(pinfo);
    if (!map || !prog || bpf_obj_get_info_by_fd(prog.get(), &pinfo, &plen) != 0 ||
        bpf_prog_query(map.get(), bpf_attach_type(a.attach_type), 0, &flags, ids, &count) != 0 ||
        std::find(ids, ids + count, pinfo.id) == ids + count)
      return "program '" + a.prog + "' is no longer attached to " + a.map_pin;
  }
  return "";
}

PinnedInstance::PinnedInstance(const PinLayout& layout, std::string instance,
                               InstanceState st, const std::vector<OptionSpec>& schema)
    : instance_(std::move(instance)),
      paths_(layout.instance(instance_)),
      dir_(paths_.dir),
      state_(std::move(st)),
      options_(options_from_json(state_.options, schema)) {}

std::string PinnedInstance::pin_path(PinKind kind, std::string_view name) const {
  if (kind == PinKind::Map)
    for (auto& s : state_.shared_maps)
      if (s.map == name) return s.pin;
  return paths_.pin(kind, name);
}

int PinnedInstance::map_fd(std::string_view map) const {
  std::string name(map);
  if (auto it = fds_.find(name); it != fds_.end()) return it->second.get();
  std::string pin = pin_path(PinKind::Map, name);
  Fd fd(bpf_obj_get(pin.c_str()));
  if (!fd) throw Error("instance '" + instance_ + "' has no map '" + name +
                       "' (" + pin + ": " + errno_text(errno) + ")");
  return fds_.emplace(name, std::move(fd)).first->second.get();
}

std::unique_ptr<PinnedInstance> open_pinned(const PinLayout& layout,
                                            const std::string& instance,
                                            const InstanceState& state,
                                            const PluginModule& plugin) {
  return std::make_unique<PinnedInstance>(layout, instance, state,
                                          plugin.option_schema());
}

bool unpin_instance_locked(const PinLayout& layout, const std::string& instance,
                           const StateLookup& rec, PluginRegistry& registry,
                           std::vector<std::string>& errors) {
  auto dir = layout.instance(instance);
  if (!rec.ours()) {
    errors.push_back(dir.dir + " is not bpfmgr's (" + rec.why + "); left alone");
    return false;
  }
  if (auto& st = rec.state) {
    // The plugin's hook is a courtesy: a plugin file that is missing,
    // untrusted or changed since the load is not run, and the pins and
    // links go all the same. A plugin without the hook is not loaded.
    if (st->before_unpin) {
      try {
        auto plugin = registry.load_file(st->plugin_path, st->plugin_sha256,
                                         kRecordedHashOrigin);
        auto ctx = open_pinned(layout, instance, *st, *plugin->plugin);
        plugin->plugin->create(*ctx)->before_unpin();
      } catch (const std::exception& e) {
        spdlog::warn("{}: before_unpin skipped: {}", instance, e.what());
      }
    }
    for (auto& a : st->map_attachments)
      if (!detach_map_attachment(dir, a) && errno != ENOENT)
        errors.push_back(instance + ": cannot detach " + a.prog + " from " + a.map_pin +
                         ": " + errno_text(errno));
  } else {
    spdlog::warn("{}: {}; removing what is pinned in {}", instance, rec.why, dir.dir);
  }
  return remove_owned_dir(dir, errors);
}

UnpinReport unpin(const std::string& pin_root,
                  const std::vector<std::string>& instances,
                  PluginRegistry& registry, LockWait wait) {
  UnpinReport report;
  if (auto why = pin_root_problem(pin_root); !why.empty()) throw Error(why);
  PinLayout layout(pin_root);
  auto lock = PinRootLock::acquire(layout.root(), wait);
  report.recovered = recover_pin_root(layout, report.errors);
  auto seen = observe_pin_root(layout);
  for (auto& f : seen.foreign)
    report.left_alone.push_back(f.name + ": " + f.why);
  if (!instances.empty()) {
    for (auto& i : instances) {
      if (!seen.is_instance(i)) {
        if (auto* f = seen.find_foreign(i)) {
          report.errors.push_back(layout.instance(i).dir + " is not bpfmgr's (" + f->why +
                                  "); left alone");
          continue;
        }
        auto hint = did_you_mean(i, seen.instances);
        report.errors.push_back("no instance '" + i + "' under " + layout.root() +
                                (hint.empty() ? "" : "; " + hint));
        continue;
      }
      if (unpin_instance_locked(layout, i, seen.records.at(i), registry, report.errors))
        report.removed.push_back(i);
    }
    return report;
  }
  // Sharers before owners: an instance whose maps others use goes last.
  auto names = seen.instances;
  std::set<std::string> owners;
  for (auto& n : names)
    if (auto& st = seen.records.at(n).state)
      for (auto& s : st->shared_maps) owners.insert(s.instance);
  std::stable_partition(names.begin(), names.end(),
                        [&](auto& n) { return !owners.count(n); });
  for (auto& n : names)
    if (unpin_instance_locked(layout, n, seen.records.at(n), registry, report.errors))
      report.removed.push_back(n);
  // The pin root goes when nothing is left in it (never /sys/fs/bpf).
  if (seen.exists && layout.root() != "/sys/fs/bpf" && ::rmdir(layout.root().c_str()) != 0 &&
      errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
    report.errors.push_back("cannot remove " + layout.root() + ": " + errno_text(errno));
  return report;
}

nlohmann::json metrics_to_json(const std::vector<Metric>& metrics) {
  auto out = nlohmann::json::array();
  for (auto& m : metrics) {
    auto labels = nlohmann::json::object();
    for (auto& [k, v] : m.labels) labels[k] = v;
    out.push_back({{"name", m.name},
                   {"kind", m.kind == MetricKind::Counter ? "counter" : "gauge"},
                   {"help", m.help},
                   {"labels", labels},
                   {"value", m.value}});
  }
  return out;
}

namespace {

// What the kernel says of the link pinned at `pin` (id, type, program),
// added to `lj`; nothing when it cannot be read.
void add_link_info(nlohmann::json& lj, const std::string& pin) {
  Fd fd(bpf_obj_get(pin.c_str()));
  bpf_link_info info{};
  std::uint32_t len = sizeof(info);
  if (fd && bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0) {
    lj["id"] = info.id;
    lj["type"] = link_type_name(info.type);
    lj["prog_id"] = info.prog_id;
  }
}

// A pinned link as the kernel has it; `problem`: why it does not run what
// the record says ("" when it does).
nlohmann::json link_json(const InstancePaths& paths, const LinkRecord& l, std::string& problem) {
  nlohmann::json lj{{"name", l.name}, {"prog", l.prog}, {"target", l.target},
                    {"pin", paths.link(l.name)}};
  add_link_info(lj, paths.link(l.name));
  problem = link_problem(paths, l);
  if (!problem.empty()) lj["error"] = problem;
  return lj;
}

// A pinned program as the kernel has it, with the live hooks it runs on.
nlohmann::json prog_json(const InstancePaths& paths, const InstanceState& st,
                         const std::string& name, const nlohmann::json& hooks) {
  nlohmann::json p{{"name", name}, {"pin", paths.prog(name)}};
  Fd fd(bpf_obj_get(paths.prog(name).c_str()));
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  if (fd && bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0) {
    p["id"] = info.id;
    if (auto it = st.prog_tags.find(name); it != st.prog_tags.end()) p["tag"] = it->second;
    auto t = libbpf_bpf_prog_type_str(bpf_prog_type(info.type));
    p["type"] = t ? t : "?";
    // Accrue only while kernel.bpf_stats_enabled is on.
    p["run_cnt"] = info.run_cnt;
    p["run_time_ns"] = info.run_time_ns;
  } else {
    p["error"] = "pin missing";
  }
  auto& at = p["attached_to"] = nlohmann::json::array();
  for (auto& h : hooks)
    if (h["prog"] == name && h["live"].get<bool>()) at.push_back(h["target"]);
  return p;
}

// A pinned map as the kernel has it; `owner`: the instance it is shared from.
nlohmann::json map_json(const std::string& name, const std::string& pin,
                        const std::string& owner) {
  nlohmann::json mj{{"name", name}, {"pin", pin}};
  if (!owner.empty()) mj["shared_from"] = owner;
  Fd fd(bpf_obj_get(pin.c_str()));
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (fd && bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0) {
    mj["id"] = info.id;
    auto t = libbpf_bpf_map_type_str(bpf_map_type(info.type));
    mj["type"] = t ? t : "?";
    mj["max_entries"] = info.max_entries;
    mj["key_size"] = info.key_size;
    mj["value_size"] = info.value_size;
    mj["btf"] = info.btf_id != 0;
  } else {
    mj["error"] = "pin missing";
  }
  return mj;
}

// The plugin's status() hook: counters, details, metrics; or why it was
// not run (status_error, and plugin_refused for a file it may not run).
void add_plugin_status(nlohmann::json& j, const PinLayout& layout, const std::string& instance,
                       const InstanceState& st, PluginRegistry& registry) {
  j["counters"] = nlohmann::json::array();
  j["details"] = nlohmann::json::object();
  try {
    auto plugin = registry.load_file(st.plugin_path, st.plugin_sha256, kRecordedHashOrigin);
    auto ctx = open_pinned(layout, instance, st, *plugin->plugin);
    plugin->plugin->create(*ctx)->status();
    const auto& rep = ctx->report;
    for (auto& c : rep.counters) {
      nlohmann::json cj{{"name", c.name}, {"value", c.value}};
      if (!c.per_cpu.empty()) cj["per_cpu"] = c.per_cpu;
      j["counters"].push_back(cj);
    }
    for (auto& [k, v] : rep.details) j["details"][k] = v;
    j["metrics"] = metrics_to_json(rep.metrics);
  } catch (const PluginTrustError& e) {
    j["status_error"] = e.what();
    j["plugin_refused"] = true;
  } catch (const std::exception& e) {
    j["status_error"] = e.what();
  }
}

}  // namespace

nlohmann::json instance_status(const PinLayout& layout, const std::string& instance,
                               const StateLookup& record, PluginRegistry& registry) {
  nlohmann::json j;
  j["instance"] = instance;
  auto paths = layout.instance(instance);
  if (!record.state) {
    j["error"] = record.why + "; `bpfmgr unpin " + instance +
                 "` removes what is pinned, the next `bpfmgr load` replaces it";
    return j;
  }
  const auto& st = *record.state;
  if (auto drift = kernel_drift(paths, st); !drift.empty())
    j["drift"] = drift + "; the next `bpfmgr load` of its manifest repairs it";
  j["plugin"] = st.plugin;
  j["plugin_version"] = st.plugin_version;
  j["plugin_path"] = st.plugin_path;
  j["plugin_sha256"] = st.plugin_sha256;
  j["manifest"] = st.manifest_path;
  j["loaded_at"] = st.loaded_at;
  j["complete"] = st.complete;
  j["options"] = st.options;
  j["degraded"] = degraded_json(st.degraded);

  // Whether each hook really runs comes from the kernel, not the record:
  // a link pin removed by hand, or a cgroup deleted under a cgroup link,
  // leaves the record saying "live".
  std::map<std::pair<std::string, std::string>, std::string> hook_problem;
  auto links = nlohmann::json::array();
  for (auto& l : st.links) links.push_back(link_json(paths, l, hook_problem[{l.prog, l.target}]));
  auto hooks = nlohmann::json::array();
  for (auto& h : st.hooks) {
    bool live = h.live;
    std::string reason = h.reason;
    if (auto it = hook_problem.find({h.prog, h.target});
        live && it != hook_problem.end() && !it->second.empty()) {
      live = false;
      reason = it->second;
    }
    hooks.push_back({{"prog", h.prog}, {"target", h.target}, {"live", live},
                     {"reason", reason}});
  }
  auto& progs = j["programs"] = nlohmann::json::array();
  for (auto& name : st.progs) progs.push_back(prog_json(paths, st, name, hooks));
  auto& maps = j["maps"] = nlohmann::json::array();
  for (auto& name : st.maps) maps.push_back(map_json(name, paths.map(name), ""));
  for (auto& s : st.shared_maps) maps.push_back(map_json(s.map, s.pin, s.instance));
  j["links"] = std::move(links);
  j["hooks"] = std::move(hooks);
  add_plugin_status(j, layout, instance, st, registry);
  return j;
}

nlohmann::json pin_root_status(const std::string& pin_root,
                               const std::vector<std::string>& only,
                               PluginRegistry& registry) {
  PinLayout layout(pin_root);
  auto seen = observe_pin_root(layout);
  nlohmann::json j{{"pin_root", layout.root()}};
  auto& all = j["instances"] = nlohmann::json::array();
  auto names = only.empty() ? seen.instances : only;
  for (auto& n : names) {
    if (auto it = seen.records.find(n); it != seen.records.end()) {
      all.push_back(instance_status(layout, n, it->second, registry));
    } else if (auto* f = seen.find_foreign(n)) {
      all.push_back({{"instance", n}, {"error", "not bpfmgr's: " + f->why}});
    } else if (std::count(seen.leftovers.begin(), seen.leftovers.end(), n)) {
      all.push_back({{"instance", n},
                     {"missing", true},
                     {"error", "no instance '" + n + "': " + layout.instance(n).dir +
                                   " is an empty directory an interrupted unpin left; "
                                   "the next load or unpin removes it"}});
    } else if (std::find(seen.staging.begin(), seen.staging.end(), n) == seen.staging.end()) {
      auto hint = did_you_mean(n, seen.instances);
      all.push_back({{"instance", n},
                     {"missing", true},
                     {"error", "no instance '" + n + "' under " + layout.root() +
                                   (hint.empty() ? "" : "; " + hint)}});
    }
  }
  // What a crash left: staged pins (and links, which run) that the next
  // load or unpin finishes or removes.
  auto journal = read_journal(layout.journal());
  auto& interrupted = j["interrupted"] = nlohmann::json::array();
  for (auto& n : seen.staging) {
    if (!only.empty() && std::find(only.begin(), only.end(), n) == only.end()) continue;
    auto stg = layout.staging(n);
    auto rec = lookup_state(stg.state());
    bool committing = journal &&
                      std::count(journal->committing.begin(), journal->committing.end(), n) &&
                      rec.state && rec.state->complete;
    nlohmann::json e{{"instance", n}, {"staging", stg.dir}, {"committing", committing}};
    if (auto why = staging_left_alone(layout, n); !why.empty()) {
      e["left_alone"] = true;
      e["next"] = why;
    } else if (!rec.ours()) {
      e["next"] = "an empty staging directory an interrupted load or commit left; the next "
                  "load or unpin removes it";
    } else {
      e["next"] = committing ? "the next load or unpin finishes its commit"
                             : "the next load or unpin reverts it";
    }
    if (rec.kind == StateLookup::Corrupt) e["record_error"] = rec.why;
    auto pins = list_pins(stg);
    e["programs"] = pins.progs;
    e["maps"] = pins.maps;
    auto& links = e["links"] = nlohmann::json::array();
    if (DIR* d = ::opendir(stg.links_dir().c_str())) {
      while (auto* de = ::readdir(d)) {
        std::string ln = de->d_name;
        if (ln == "." || ln == "..") continue;
        nlohmann::json lj{{"name", ln}, {"pin", stg.link(ln)}};
        add_link_info(lj, stg.link(ln));
        links.push_back(lj);
      }
      ::closedir(d);
    }
    interrupted.push_back(e);
  }
  auto& foreign = j["foreign"] = nlohmann::json::array();
  for (auto& f : seen.foreign) foreign.push_back({{"name", f.name}, {"why", f.why}});
  auto& leftovers = j["leftovers"] = nlohmann::json::array();
  for (auto& n : seen.leftovers)
    leftovers.push_back({{"name", n},
                         {"why", "an empty directory an interrupted unpin left; the next "
                                 "load or unpin removes it"}});
  j["journal"] = seen.journal;
  return j;
}

}  // namespace bpfmgr
