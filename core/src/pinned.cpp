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
#include "diagnostics.hpp"
#include "loader.hpp"
#include "pin_tree.hpp"
#include "plugin_trust.hpp"
#include "system.hpp"

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

}  // namespace

std::vector<std::string> list_instances(const std::string& pin_root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(pin_root, ec)) {
    auto name = e.path().filename().string();
    if (e.is_directory(ec) && !name.empty() && name[0] != '_') out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}


class PinnedInstance final : public PinnedContext {
 public:
  PinnedInstance(std::string pin_root, std::string instance, InstanceState st,
                 const std::vector<OptionSpec>& schema)
      : instance_(std::move(instance)),
        dir_(pin_root + "/" + instance_),
        state_(std::move(st)),
        options_(options_from_json(state_.options, schema)) {}

  const std::string& instance_name() const override { return instance_; }
  const Options& options() const override { return options_; }
  const std::string& pin_dir() const override { return dir_; }
  int map_fd(std::string_view map) const override {
    std::string name(map);
    if (auto it = fds_.find(name); it != fds_.end()) return it->second.get();
    std::string pin = dir_ + "/maps/" + name;
    for (auto& s : state_.shared_maps)
      if (s.map == name) pin = s.pin;
    Fd fd(bpf_obj_get(pin.c_str()));
    if (!fd) throw Error("instance '" + instance_ + "' has no map '" + name +
                         "' (" + pin + ": " + errno_text(errno) + ")");
    return fds_.emplace(name, std::move(fd)).first->second.get();
  }

 private:
  std::string instance_;
  std::string dir_;
  InstanceState state_;
  Options options_;
  mutable std::map<std::string, Fd> fds_;
};

std::unique_ptr<PinnedContext> open_pinned(const std::string& pin_root,
                                           const std::string& instance,
                                           const InstanceState& state,
                                           const Plugin& plugin) {
  return std::make_unique<PinnedInstance>(pin_root, instance, state,
                                          plugin.option_schema());
}

void unpin_instance_locked(const std::string& pin_root, const std::string& instance,
                           PluginRegistry& registry, std::vector<std::string>& errors) {
  auto dir = pin_root + "/" + instance;
  if (auto st = read_state(dir)) {
    // The plugin's hook is a courtesy: a plugin file that is missing,
    // untrusted or changed since the load is not run, and the pins and
    // links go all the same.
    try {
      auto plugin = registry.load_file(st->plugin_path, st->plugin_sha256,
                                       kRecordedHashOrigin);
      auto ctx = open_pinned(pin_root, instance, *st, *plugin->plugin);
      plugin->plugin->before_unpin(*ctx);
    } catch (const std::exception& e) {
      spdlog::warn("{}: before_unpin skipped: {}", instance, e.what());
    }
    for (auto& a : st->map_attachments)
      if (!detach_map_attachment(dir, a))
        spdlog::warn("{}: cannot detach {} from {}: {}", instance, a.prog,
                     a.map_pin, errno_text(errno));
  } else {
    spdlog::warn("{}: no state record; removing whatever is pinned in {}",
                 instance, dir);
  }
  remove_instance_dir(dir);
  remove_instance_dir(pin_root + "/" + kStagingPrefix + instance);
  std::error_code ec;
  if (fs::exists(dir, ec)) errors.push_back(instance + ": " + dir + " is still there");
}

UnpinReport unpin(const std::string& pin_root,
                  const std::vector<std::string>& instances,
                  PluginRegistry& registry, LockWait wait) {
  UnpinReport report;
  auto lock = PinRootLock::acquire(pin_root, wait);
  std::error_code ec;
  if (!fs::exists(pin_root, ec)) {
    for (auto& i : instances)
      report.errors.push_back("no instance '" + i + "' under " + pin_root);
    return report;
  }
  auto present = list_instances(pin_root);
  if (!instances.empty()) {
    for (auto& i : instances) {
      bool staging = fs::exists(pin_root + "/" + kStagingPrefix + i, ec);
      if (std::find(present.begin(), present.end(), i) == present.end() && !staging) {
        auto hint = did_you_mean(i, present);
        report.errors.push_back("no instance '" + i + "' under " + pin_root +
                                (hint.empty() ? "" : "; " + hint));
        continue;
      }
      unpin_instance_locked(pin_root, i, registry, report.errors);
      report.removed.push_back(i);
    }
    return report;
  }
  // Sharers before owners: an instance whose maps others use goes last.
  std::set<std::string> owners;
  for (auto& n : present)
    if (auto st = read_state(pin_root + "/" + n))
      for (auto& s : st->shared_maps) owners.insert(s.instance);
  std::stable_partition(present.begin(), present.end(),
                        [&](auto& n) { return !owners.count(n); });
  for (auto& n : present) {
    unpin_instance_locked(pin_root, n, registry, report.errors);
    report.removed.push_back(n);
  }
  for (auto& e : fs::directory_iterator(pin_root, ec))
    if (e.path().filename().string().rfind(kStagingPrefix, 0) == 0)
      remove_instance_dir(e.path().string());
  if (fs::exists(pin_root, ec) && fs::is_empty(pin_root, ec) &&
      pin_root != "/sys/fs/bpf")
    ::rmdir(pin_root.c_str());
  return report;
}

nlohmann::json instance_status(const std::string& pin_root,
                               const std::string& instance,
                               PluginRegistry& registry) {
  nlohmann::json j;
  j["instance"] = instance;
  auto dir = pin_root + "/" + instance;
  auto st = read_state(dir);
  if (!st) {
    j["error"] = "no state record (a load was interrupted?); `bpfmgr unpin " +
                 instance + "` removes what is pinned";
    return j;
  }
  j["plugin"] = st->plugin;
  j["plugin_version"] = st->plugin_version;
  j["plugin_path"] = st->plugin_path;
  j["plugin_sha256"] = st->plugin_sha256;
  j["manifest"] = st->manifest_path;
  j["loaded_at"] = st->loaded_at;
  j["complete"] = st->complete;
  j["options"] = st->options;

  // Whether each hook really runs comes from the kernel, not the record:
  // a link pin removed by hand, or a cgroup deleted under a cgroup link,
  // leaves the record saying "live".
  std::map<std::pair<std::string, std::string>, std::string> link_problem;
  auto links = nlohmann::json::array();
  for (auto& l : st->links) {
    nlohmann::json lj{{"name", l.name}, {"prog", l.prog}, {"target", l.target},
                      {"pin", dir + "/links/" + l.name}};
    Fd fd(bpf_obj_get((dir + "/links/" + l.name).c_str()));
    bpf_link_info info{};
    std::uint32_t len = sizeof(info);
    std::string problem;
    if (fd && bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0) {
      lj["id"] = info.id;
      lj["type"] = link_type_name(info.type);
      if (info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == 0)
        problem = "its cgroup was removed; the link is detached";
    } else {
      problem = "its link pin is missing (removed by hand?)";
    }
    if (!problem.empty()) lj["error"] = problem;
    link_problem[{l.prog, l.target}] = problem;
    links.push_back(lj);
  }
  auto hooks = nlohmann::json::array();
  for (auto& h : st->hooks) {
    bool live = h.live;
    std::string reason = h.reason;
    if (auto it = link_problem.find({h.prog, h.target});
        live && it != link_problem.end() && !it->second.empty()) {
      live = false;
      reason = it->second;
    }
    hooks.push_back({{"prog", h.prog}, {"target", h.target}, {"live", live},
                     {"reason", reason}});
  }

  auto& progs = j["programs"] = nlohmann::json::array();
  for (auto& name : st->progs) {
    nlohmann::json p{{"name", name}, {"pin", dir + "/progs/" + name}};
    Fd fd(bpf_obj_get((dir + "/progs/" + name).c_str()));
    bpf_prog_info info{};
    std::uint32_t len = sizeof(info);
    if (fd && bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0) {
      p["id"] = info.id;
      auto t = libbpf_bpf_prog_type_str(bpf_prog_type(info.type));
      p["type"] = t ? t : "?";
    } else {
      p["error"] = "pin missing";
    }
    auto& at = p["attached_to"] = nlohmann::json::array();
    for (auto& h : hooks)
      if (h["prog"] == name && h["live"].get<bool>()) at.push_back(h["target"]);
    progs.push_back(p);
  }
  auto map_json = [&](const std::string& name, const std::string& pin,
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
  };
  auto& maps = j["maps"] = nlohmann::json::array();
  for (auto& name : st->maps) maps.push_back(map_json(name, dir + "/maps/" + name, ""));
  for (auto& s : st->shared_maps) maps.push_back(map_json(s.map, s.pin, s.instance));

  j["links"] = std::move(links);
  j["hooks"] = std::move(hooks);

  j["counters"] = nlohmann::json::array();
  j["details"] = nlohmann::json::object();
  try {
    auto plugin = registry.load_file(st->plugin_path, st->plugin_sha256,
                                     kRecordedHashOrigin);
    auto ctx = open_pinned(pin_root, instance, *st, *plugin->plugin);
    auto rep = plugin->plugin->status(*ctx);
    for (auto& c : rep.counters) {
      nlohmann::json cj{{"name", c.name}, {"value", c.value}};
      if (!c.per_cpu.empty()) cj["per_cpu"] = c.per_cpu;
      j["counters"].push_back(cj);
    }
    for (auto& [k, v] : rep.details) j["details"][k] = v;
  } catch (const PluginTrustError& e) {
    j["status_error"] = e.what();
    j["plugin_refused"] = true;
  } catch (const std::exception& e) {
    j["status_error"] = e.what();
  }
  return j;
}

}  // namespace bpfmgr
