// The side of loaded instances that any process sees through their pins:
// what is under a pin root (and whose it is), whether the kernel runs what
// the records say, status, the PinnedContext given to plugins, and unpin.
#pragma once

#include <map>
#include <optional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "handles.hpp"
#include "pin_layout.hpp"
#include "pin_root_lock.hpp"
#include "plugins.hpp"
#include "state.hpp"

namespace bpfmgr {

// A pin root as it is, read without following symlinks. A directory is an
// instance of bpfmgr's only when it holds a bpfmgr state record (valid, or
// corrupt but recognisably bpfmgr's map); anything else is foreign and is
// never removed, followed or descended into.
struct ObservedPinRoot {
  struct Foreign {
    std::string name;
    std::string why;
  };
  bool exists = false;
  std::vector<std::string> instances;          // sorted
  std::map<std::string, StateLookup> records;  // of `instances`
  std::vector<std::string> staging;            // instances with a _staging- dir
  std::vector<Foreign> foreign;
  // Empty directories bpfmgr's own interrupted unpin left (no record,
  // nothing in them): the next load or unpin removes them.
  std::vector<std::string> leftovers;
  bool journal = false;                        // a commit was interrupted

  bool is_instance(const std::string& name) const { return records.count(name) > 0; }
  const Foreign* find_foreign(const std::string& name) const {
    for (auto& f : foreign)
      if (f.name == name) return &f;
    return nullptr;
  }
  // The instances a load of manifest `manifest_path` made (their records
  // say so) that `wanted` no longer names: what loading it again removes.
  std::vector<std::string> dropped_from(const std::string& manifest_path,
                                        const std::set<std::string>& wanted) const {
    std::vector<std::string> out;
    for (auto& [name, lookup] : records)
      if (!wanted.count(name) && lookup.state && lookup.state->manifest_path == manifest_path)
        out.push_back(name);
    return out;
  }
};
ObservedPinRoot observe_pin_root(const PinLayout& layout);

// Why one recorded link does not run what the record says, "" when it
// does: pin missing, detached by hand (cgroup or sockmap link with no
// target), or running another program than the pinned one, whose id is
// read from its pin unless the caller just did.
std::string link_problem(const InstancePaths& dir, const LinkRecord& link,
                         std::optional<std::uint32_t> pinned_prog_id = std::nullopt);
// The first difference between a record and the kernel ("" when none):
// pins missing, a link's problem, a map attachment gone.
std::string kernel_drift(const InstancePaths& dir, const InstanceState& state);

struct UnpinReport {
  std::vector<std::string> removed;    // instances removed
  std::vector<std::string> recovered;  // crash leftovers finished or reverted
  std::vector<std::string> left_alone; // foreign entries, untouched
  std::vector<std::string> errors;     // what could not be removed, and why
  bool ok() const { return errors.empty(); }
};

// Removes the named instances (all of bpfmgr's when `instances` is empty,
// then the pin root itself when empty) under the pin root's lock, after
// finishing or reverting what a crashed load left. For each instance: the
// plugin's before_unpin (best effort), non-link attachments undone, links
// first, the state record last. A name that is not one of bpfmgr's
// instances is an error in the report; foreign entries are never touched.
UnpinReport unpin(const std::string& pin_root,
                  const std::vector<std::string>& instances,
                  PluginRegistry& registry, LockWait wait = LockWait::Block);

// One instance, for callers that hold the pin root's lock (load removing
// instances dropped from its manifest); `rec` is its record as observed
// under that lock. Appends failures to `errors`; true when the instance is
// gone.
bool unpin_instance_locked(const PinLayout& layout, const std::string& instance,
                           const StateLookup& rec, PluginRegistry& registry,
                           std::vector<std::string>& errors);

// A plugin's typed samples (API 2.2) as `status --json` shows them:
// [{name, kind: counter|gauge, help, labels: {..}, value}].
nlohmann::json metrics_to_json(const std::vector<Metric>& metrics);

// `bpfmgr status` for one instance, as JSON (the text form is made from it).
nlohmann::json instance_status(const PinLayout& layout, const std::string& instance,
                               const StateLookup& record, PluginRegistry& registry);
// Status of a whole pin root: instances, interrupted loads, foreign entries.
nlohmann::json pin_root_status(const std::string& pin_root,
                               const std::vector<std::string>& only,
                               PluginRegistry& registry);

// The context a plugin's status, before_unpin and event formatter see: an
// instance loaded earlier (by any process), through its pins. Options are
// re-typed with `plugin`'s schema.
class PinnedInstance final : public HostContext {
 public:
  PinnedInstance(const PinLayout& layout, std::string instance, InstanceState st,
                 const std::vector<OptionSpec>& schema);

  const std::string& instance_name() const override { return instance_; }
  const Options& options() const override { return options_; }
  const std::string& pin_dir() const override { return dir_; }
  // Opens the pinned map (or the map this instance shares from another);
  // the fd stays open as long as this object.
  int map_fd(std::string_view map) const override;
  // What the plugin's status hook reports.
  void add_counter(Counter c) override { report.counters.push_back(std::move(c)); }
  void add_detail(std::string key, std::string value) override {
    report.details.emplace_back(std::move(key), std::move(value));
  }
  void add_metric(Metric m) override {
    check_metric(report, m);
    report.metrics.push_back(std::move(m));
  }
  // A shared map's pin is its owner's (as the record says).
  std::string pin_path(PinKind kind, std::string_view name) const override;
  StatusReport report;

 private:
  std::string instance_;
  InstancePaths paths_;
  std::string dir_;
  InstanceState state_;
  Options options_;
  mutable std::map<std::string, Fd> fds_;
};

std::unique_ptr<PinnedInstance> open_pinned(const PinLayout& layout,
                                            const std::string& instance,
                                            const InstanceState& state,
                                            const PluginModule& plugin);

}  // namespace bpfmgr
