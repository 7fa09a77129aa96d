#include "loader.hpp"

#include <bpf/bpf.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "pin_txn.hpp"
#include "handles.hpp"
#include "instance_txn.hpp"
#include "load_signals.hpp"
#include "pin_tree.hpp"
#include "errno_text.hpp"
#include "fingerprint.hpp"
#include "mounts.hpp"
#include "plugin_trust.hpp"
#include "record_json.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

// The hash of a plugin's BPF object, computed once per plugin and load:
// instances of one plugin share it.
using ObjectHashes = std::map<const LoadedPlugin*, std::string>;
const std::string& object_hash(const LoadedPlugin& plugin, ObjectHashes& known) {
  auto [it, added] = known.try_emplace(&plugin);
  if (added) {
    auto bytes = plugin.bpf_object;
    it->second = fnv1a_hex(
        std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
  return it->second;
}

std::string config_hash(const ResolvedInstance& r, const Manifest& m, ObjectHashes& known) {
  nlohmann::json j;
  j["plugin"] = r.plugin->info.name;
  j["version"] = r.plugin->info.version;
  j["path"] = r.plugin->path;
  // The plugin file's own bytes: a rebuilt plugin (new user-space code, the
  // same BPF object) is a new plugin, and the record names its sha256.
  j["sha256"] = r.plugin->sha256;
  j["object"] = object_hash(*r.plugin, known);
  j["options"] = options_to_json(r.options);
  auto& shares = j["maps"] = nlohmann::json::array();
  for (auto& s : r.spec->maps)
    shares.push_back({s.map, s.instance, s.remote_map});
  j["pin_root"] = m.pin_root;
  return fnv1a_hex(j.dump());
}

// Step 1: the pin root made ready, under its lock: leftovers of an
// interrupted load finished or reverted, the root created, what is there
// observed, and no instance of this manifest in the place of a foreign path.
struct PreparedRoot {
  std::optional<PinRootLock> lock;
  bool created = false;
  ObservedPinRoot seen;
};
void prepare_pin_root(const ResolvedManifest& rm, const PinLayout& layout,
                      PreparedRoot& root, LoadReport& report) {
  std::vector<std::string> errors;
  report.recovered = recover_pin_root(layout, errors);
  if (!errors.empty()) {
    std::string msg = "cannot recover what an interrupted load left under " + layout.root() + ":";
    for (auto& e : errors) msg += "\n  " + e;
    throw Error(msg);
  }
  std::error_code ec;
  if (!fs::exists(layout.root(), ec)) {
    fs::create_directories(layout.root(), ec);
    if (ec) throw Error("cannot create pin root " + layout.root() + ": " + ec.message());
    root.created = true;
  }
  root.seen = observe_pin_root(layout);
  std::string foreign;
  for (auto& r : rm.instances)
    if (auto* f = root.seen.find_foreign(r.spec->name))
      foreign += "\n  " + layout.instance(r.spec->name).dir + ": " + f->why;
  if (!foreign.empty())
    throw Error("these paths are not bpfmgr's, and bpfmgr never touches what it did not "
                "make; remove them or rename the instances:" + foreign);
}

// The instances being staged, and the maps they lend to later sharers.
struct Staging {
  std::vector<std::unique_ptr<InstanceTxn>> txns;
  std::map<std::string, InstanceTxn*> staged;
  std::vector<Fd> borrowed;

  // A shared map's fd: the staged owner's, else the owner's pin.
  int lookup(const PinLayout& layout, const std::string& inst, const std::string& map) {
    if (auto it = staged.find(inst); it != staged.end()) {
      int fd = it->second->own_map_fd(map);
      if (fd >= 0) return fd;
    }
    auto pin = layout.instance(inst).map(map);
    Fd fd(bpf_obj_get(pin.c_str()));
    if (!fd)
      throw Error("instance '" + inst + "' has no pinned map '" + map + "' (" + pin + ": " +
                  errno_text(errno) + ")");
    borrowed.push_back(std::move(fd));
    return borrowed.back().get();
  }
  void rollback(std::vector<std::string>& errors) {
    for (auto it = txns.rbegin(); it != txns.rend(); ++it) (*it)->rollback(errors);
  }
};

// The instance's record as the kernel should match it, or nothing: a
// record that is recognisably ours but unreadable is removed to be loaded
// again whole.
std::optional<InstanceState> previous_state(const std::string& name, const PinLayout& layout,
                                            const ObservedPinRoot& seen, LoadReport& report) {
  auto it = seen.records.find(name);
  if (it == seen.records.end()) return std::nullopt;
  if (it->second.state) return it->second.state;
  std::vector<std::string> errors;
  spdlog::warn("{}: {}; removing it to load it again", name, it->second.why);
  if (!remove_owned_dir(layout.instance(name), errors))
    throw Error("cannot replace instance '" + name + "' (" + it->second.why +
                "): " + errors.front());
  report.repaired.push_back(name + ": " + it->second.why);
  return std::nullopt;
}

// The instance's object as resolve prepared it, or, when an earlier load
// of the same resolve (serve applies one many times) closed it, prepared
// again: before_load sees the kernel of this load.
std::shared_ptr<InstanceObject> object_for_load(const ResolvedInstance& r, const Manifest& m) {
  if (r.object && r.object->ready_for_load()) return r.object;
  auto object = open_instance_object(r, m.pin_root);
  object->prepare();
  return object;
}

// Every prepared object of the resolve closed when the load ends, those of
// unchanged instances too: none outlives its load (a later load prepares
// its own), and what a load took holds no kernel object after it.
struct ClosePreparedObjects {
  const ResolvedManifest& rm;
  ~ClosePreparedObjects() {
    for (auto& r : rm.instances)
      if (r.object) r.object->close();
  }
};

// Step 2: every changed instance staged (loaded, pinned in its staging
// directory, attached); unchanged ones are left alone.
void stage_changed(const ResolvedManifest& rm, const LoadOptions& lo, const PinLayout& layout,
                   const ObservedPinRoot& seen, Staging& s,
                   const std::function<void()>& check_cancel, LoadReport& report) {
  const auto& m = rm.manifest;
  auto lookup = [&](const std::string& inst, const std::string& map) {
    return s.lookup(layout, inst, map);
  };
  ObjectHashes object_hashes;
  for (auto& r : rm.instances) {
    check_cancel();
    const auto& name = r.spec->name;
    std::optional<InstanceState> old;
    if (!lo.dry_run) old = previous_state(name, layout, seen, report);
    bool owner_restaged = false;
    for (auto& share : r.spec->maps)
      if (auto it = s.staged.find(share.instance);
          it != s.staged.end() && it->second->recreated_map(share.remote_map))
        owner_restaged = true;
    auto hash = config_hash(r, m, object_hashes);
    // "Unchanged" means the kernel runs what the record says, not only
    // that the input hashes the same.
    std::string drift = old ? kernel_drift(layout.instance(name), *old) : "";
    if (old && old->complete && !lo.reset_maps && !owner_restaged &&
        old->config_hash == hash && drift.empty()) {
      // The next reload of this input can then skip resolving.
      if (old->input_fingerprint != r.input_fingerprint) {
        old->input_fingerprint = r.input_fingerprint;
        write_state(layout.instance(name), *old);
      }
      report.unchanged.push_back(name);
      continue;
    }
    if (!drift.empty()) {
      spdlog::warn("{}: {}; replacing it", name, drift);
      report.repaired.push_back(name + ": " + drift);
    }
    if (old && !old->complete) old.reset();
    bool is_update = old.has_value();
    auto txn = std::make_unique<InstanceTxn>(r, object_for_load(r, m), m, layout, std::move(old),
                                             lo, lookup, std::move(hash), check_cancel);
    s.staged[name] = txn.get();
    s.txns.push_back(std::move(txn));
    s.txns.back()->stage();
    if (lo.dry_run)
      report.verified.push_back(name);
    else
      (is_update ? report.updated : report.loaded).push_back(name);
  }
  check_cancel();
}

// Step 3: the staged instances committed together (pin_txn.hpp): a crash at
// any rename is finished by the next load or unpin; a signal only makes us
// say so.
void commit_all(const Manifest& m, const PinLayout& layout, const Staging& s,
                std::vector<std::string>& errors) {
  if (s.txns.empty()) return;
  std::vector<StagedInstance> staged;
  for (auto& t : s.txns) staged.push_back(t->staged());
  LoadSignals::begin_commit();
  commit_instances(layout, m.absolute_path.empty() ? m.path : m.absolute_path, staged, errors);
}

// Step 4: instances an earlier load of this manifest made that it no longer
// has; instances of other manifests are left alone. Their plugins come
// from the registry that resolved the manifest. `seen` is the root as
// step 1 observed it: the lock held since, only wanted instances changed.
void remove_dropped(const ResolvedManifest& rm, const PinLayout& layout,
                    const ObservedPinRoot& seen, std::vector<std::string>& errors,
                    LoadReport& report) {
  const auto& m = rm.manifest;
  if (!errors.empty() || m.absolute_path.empty()) return;
  std::set<std::string> wanted;
  for (auto& r : rm.instances) wanted.insert(r.spec->name);
  for (auto& name : seen.dropped_from(m.absolute_path, wanted)) {
    if (!rm.registry) throw Error("internal error: a manifest resolved without a registry");
    if (unpin_instance_locked(layout, name, seen.records.at(name), *rm.registry, errors))
      report.removed.push_back(name);
  }
}

}  // namespace

std::optional<LoadReport> unchanged_by_records(const Manifest& m, const PluginRegistry& registry,
                                               const LoadOptions& lo) {
  if (lo.dry_run || lo.reset_maps || m.absolute_path.empty() || m.instances.empty() ||
      !pin_root_problem(m.pin_root).empty())
    return std::nullopt;
  PinLayout layout(m.pin_root);
  std::error_code ec;
  if (!fs::is_directory(layout.root(), ec)) return std::nullopt;
  // The plugin files' identities, read as load would find them; a file
  // that cannot be found or trusted goes the whole way, to be reported.
  std::map<std::string, std::string> fingerprints;
  std::map<std::string, TrustedFile> files;  // by located path: one walk per file
  try {
    for (auto& spec : m.instances) {
      if (!spec.enabled) continue;
      auto where = registry.locate(spec.plugin, m.dir);
      auto it = files.find(where);
      if (it == files.end())
        it = files.emplace(where, open_trusted_file(where, "load plugin")).first;
      fingerprints[spec.name] = input_fingerprint(spec, m, it->second.path, it->second.id);
    }
  } catch (const Error&) {
    return std::nullopt;
  }
  auto lock = PinRootLock::acquire(layout.root(), lo.lock_wait);
  auto seen = observe_pin_root(layout);
  if (seen.journal || !seen.staging.empty() || !seen.leftovers.empty()) return std::nullopt;
  LoadReport report;
  for (auto& [name, fingerprint] : fingerprints) {
    auto it = seen.records.find(name);
    if (fingerprint.empty() || it == seen.records.end() || !it->second.state) return std::nullopt;
    auto& st = *it->second.state;
    if (!st.complete || st.input_fingerprint != fingerprint ||
        !kernel_drift(layout.instance(name), st).empty())
      return std::nullopt;
    report.unchanged.push_back(name);
  }
  // An instance this manifest loaded and no longer has is to be removed.
  std::set<std::string> wanted;
  for (auto& [name, fingerprint] : fingerprints) wanted.insert(name);
  if (!seen.dropped_from(m.absolute_path, wanted).empty()) return std::nullopt;
  return report;
}

Interrupted::Interrupted(int sig)
    : Error("interrupted by " + signal_name(sig) +
            " before the commit; the load was rolled back, nothing was changed"),
      signal(sig) {}

LoadReport load_manifest(const ResolvedManifest& rm, const LoadOptions& lo) {
  ClosePreparedObjects close_prepared{rm};
  LoadReport report;
  ensure_load_filesystems();
  if (auto why = pin_root_problem(rm.manifest.pin_root); !why.empty())
    throw PinRootRefused(why);
  PinLayout layout(rm.manifest.pin_root);
  // Taken before signals are caught: Ctrl-C while waiting for another
  // process simply ends this one, nothing done.
  PreparedRoot root;
  if (!lo.dry_run) root.lock.emplace(PinRootLock::acquire(layout.root(), lo.lock_wait));
  LoadSignals signals(lo.catch_signals);
  auto check_cancel = [&] {
    if (int sig = LoadSignals::received()) throw Interrupted(sig);
    if (lo.cancel && lo.cancel->load()) throw Interrupted(0);
  };
  if (!lo.dry_run) prepare_pin_root(rm, layout, root, report);

  Staging staging;
  try {
    stage_changed(rm, lo, layout, root.seen, staging, check_cancel, report);
  } catch (Error& e) {
    std::vector<std::string> errors;
    staging.rollback(errors);
    if (root.created) ::rmdir(layout.root().c_str());
    if (errors.empty()) throw;
    std::string msg = std::string(e.what()) + "\nthe rollback could not undo everything:";
    for (auto& x : errors) msg += "\n  " + x;
    throw RollbackIncomplete(msg);
  } catch (...) {
    std::vector<std::string> errors;
    staging.rollback(errors);
    if (root.created) ::rmdir(layout.root().c_str());
    throw;
  }
  if (lo.dry_run) return report;

  // From here on the load goes forward.
  std::vector<std::string> errors;
  commit_all(rm.manifest, layout, staging, errors);
  remove_dropped(rm, layout, root.seen, errors, report);
  report.interrupted_by = LoadSignals::received();
  if (!errors.empty()) {
    std::string msg = "the load did not complete:";
    for (auto& e : errors) msg += "\n  " + e;
    throw CommitIncomplete(msg);
  }
  return report;
}

}  // namespace bpfmgr
