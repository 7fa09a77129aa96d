#include "loader.hpp"

#include <bpf/bpf.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>

#include "commit.hpp"
#include "handles.hpp"
#include "instance_txn.hpp"
#include "load_signals.hpp"
#include "pin_tree.hpp"
#include "system.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

std::string config_hash(const ResolvedInstance& r, const Manifest& m) {
  nlohmann::json j;
  j["plugin"] = r.plugin->info.name;
  j["version"] = r.plugin->info.version;
  j["path"] = r.plugin->path;
  // The plugin file's own bytes: a rebuilt plugin (new user-space code, the
  // same BPF object) is a new plugin, and the record names its sha256.
  j["sha256"] = r.plugin->sha256;
  auto bytes = r.plugin->plugin->bpf_object();
  j["object"] = fnv1a_hex(std::string_view(
      reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  j["options"] = options_to_json(r.options);
  auto& shares = j["maps"] = nlohmann::json::array();
  for (auto& s : r.spec->maps)
    shares.push_back({s.map, s.instance, s.remote_map});
  j["pin_root"] = m.pin_root;
  return fnv1a_hex(j.dump());
}

}  // namespace

Interrupted::Interrupted(int sig)
    : Error("interrupted by " + signal_name(sig) +
            " before the commit; the load was rolled back, nothing was changed"),
      signal(sig) {}

LoadReport load_manifest(const ResolvedManifest& rm, const LoadOptions& lo) {
  const auto& m = rm.manifest;
  LoadReport report;
  ensure_bpffs();
  ensure_tracefs();
  if (auto why = pin_root_problem(m.pin_root); !why.empty()) throw Error(why);
  PinLayout layout(m.pin_root);
  // Taken before signals are caught: Ctrl-C while waiting for another
  // process simply ends this one, nothing done.
  std::optional<PinRootLock> lock;
  if (!lo.dry_run) lock.emplace(PinRootLock::acquire(layout.root(), lo.lock_wait));
  LoadSignals signals(lo.catch_signals);
  auto check_cancel = [&] {
    if (int sig = LoadSignals::received()) throw Interrupted(sig);
    if (lo.cancel && lo.cancel->load()) throw Interrupted(0);
  };

  bool created_root = false;
  ObservedPinRoot seen;
  if (!lo.dry_run) {
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
      created_root = true;
    }
    seen = observe_pin_root(layout);
    std::string foreign;
    for (auto& r : rm.instances)
      if (auto* f = seen.find_foreign(r.spec->name))
        foreign += "\n  " + layout.instance(r.spec->name).dir + ": " + f->why;
    if (!foreign.empty())
      throw Error("these paths are not bpfmgr's, and bpfmgr never touches what it did not "
                  "make; remove them or rename the instances:" + foreign);
  }

  std::vector<std::unique_ptr<InstanceTxn>> txns;
  std::map<std::string, InstanceTxn*> staged;
  std::vector<Fd> borrowed;
  auto lookup = [&](const std::string& inst, const std::string& map) -> int {
    if (auto it = staged.find(inst); it != staged.end()) {
      int fd = it->second->own_map_fd(map);
      if (fd >= 0) return fd;
    }
    auto pin = layout.instance(inst).map(map);
    Fd fd(bpf_obj_get(pin.c_str()));
    if (!fd)
      throw Error("instance '" + inst + "' has no pinned map '" + map +
                  "' (" + pin + ": " + errno_text(errno) + ")");
    borrowed.push_back(std::move(fd));
    return borrowed.back().get();
  };

  try {
    for (auto& r : rm.instances) {
      check_cancel();
      const auto& name = r.spec->name;
      auto paths = layout.instance(name);
      std::optional<InstanceState> old;
      if (!lo.dry_run) {
        if (auto it = seen.records.find(name); it != seen.records.end()) {
          if (it->second.state) {
            old = it->second.state;
          } else {
            // Recognisably ours but unreadable: replace it whole.
            std::vector<std::string> errors;
            spdlog::warn("{}: {}; removing it to load it again", name, it->second.why);
            if (!remove_owned_dir(paths, errors))
              throw Error("cannot replace instance '" + name + "' (" + it->second.why +
                          "): " + errors.front());
            report.repaired.push_back(name + ": " + it->second.why);
          }
        }
      }
      bool owner_restaged = false;
      for (auto& share : r.spec->maps)
        if (auto it = staged.find(share.instance);
            it != staged.end() && it->second->recreated_map(share.remote_map))
          owner_restaged = true;
      // Hashes the plugin's whole BPF object: once per instance.
      auto hash = config_hash(r, m);
      // "Unchanged" means the kernel runs what the record says, not only
      // that the input hashes the same.
      std::string drift = old ? kernel_drift(paths, *old) : "";
      if (old && old->complete && !lo.reset_maps && !owner_restaged &&
          old->config_hash == hash && drift.empty()) {
        report.unchanged.push_back(name);
        continue;
      }
      if (!drift.empty()) {
        spdlog::warn("{}: {}; replacing it", name, drift);
        report.repaired.push_back(name + ": " + drift);
      }
      if (old && !old->complete) old.reset();
      bool is_update = old.has_value();
      auto txn = std::make_unique<InstanceTxn>(r, m, layout, std::move(old), lo, lookup,
                                               std::move(hash), check_cancel);
      staged[name] = txn.get();
      txns.push_back(std::move(txn));
      txns.back()->stage();
      if (lo.dry_run)
        report.verified.push_back(name);
      else
        (is_update ? report.updated : report.loaded).push_back(name);
    }
    check_cancel();
  } catch (Error& e) {
    std::vector<std::string> errors;
    for (auto it = txns.rbegin(); it != txns.rend(); ++it) (*it)->rollback(errors);
    if (created_root) ::rmdir(layout.root().c_str());
    if (errors.empty()) throw;
    std::string msg = std::string(e.what()) + "\nthe rollback could not undo everything:";
    for (auto& x : errors) msg += "\n  " + x;
    throw RollbackIncomplete(msg);
  } catch (...) {
    std::vector<std::string> errors;
    for (auto it = txns.rbegin(); it != txns.rend(); ++it) (*it)->rollback(errors);
    if (created_root) ::rmdir(layout.root().c_str());
    throw;
  }
  if (lo.dry_run) return report;

  // From here on the load goes forward: the journal names every instance
  // about to be committed, so a crash at any rename is finished by the
  // next load or unpin; a signal only makes us say so.
  std::vector<std::string> errors;
  if (!txns.empty()) {
    Journal journal;
    for (auto& t : txns) journal.committing.push_back(t->instance_name());
    journal.manifest_path = m.absolute_path.empty() ? m.path : m.absolute_path;
    journal.pid = ::getpid();
    LoadSignals::begin_commit();
    write_journal(layout.journal(), journal);
    for (auto& t : txns) {
      try {
        t->commit();
      } catch (const std::exception& e) {
        errors.push_back(e.what());
      }
    }
    if (errors.empty() && ::unlink(layout.journal().c_str()) != 0)
      errors.push_back("cannot remove the journal " + layout.journal() + ": " +
                       errno_text(errno));
  }

  // Instances an earlier load of this manifest made that it no longer has;
  // instances of other manifests are left alone.
  std::set<std::string> wanted;
  for (auto& r : rm.instances) wanted.insert(r.spec->name);
  PluginRegistry registry(m.plugin_path);
  if (errors.empty() && !m.absolute_path.empty()) {
    auto now = observe_pin_root(layout);
    for (auto& name : now.instances) {
      if (wanted.count(name)) continue;
      auto& st = now.records.at(name).state;
      if (st && st->manifest_path == m.absolute_path &&
          unpin_instance_locked(layout, name, registry, errors))
        report.removed.push_back(name);
    }
  }
  report.interrupted_by = LoadSignals::received();
  if (!errors.empty()) {
    std::string msg = "the load did not complete:";
    for (auto& e : errors) msg += "\n  " + e;
    throw CommitIncomplete(msg);
  }
  return report;
}

}  // namespace bpfmgr
