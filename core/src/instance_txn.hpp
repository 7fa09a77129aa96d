// One instance's part of a load transaction (loader.hpp): open the BPF
// object, run the plugin's hooks, bind shared and kept maps, load, pin into
// the staging directory, attach; then commit it into place or roll it back.
// It is also the HostContext the plugin's load-time hooks see.
#pragma once

#include <bpf/libbpf.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "handles.hpp"
#include "load_options.hpp"
#include "object_spec.hpp"
#include "pin_layout.hpp"
#include "plugins.hpp"
#include "resolve.hpp"
#include "state.hpp"
#include "errno_text.hpp"

namespace bpfmgr {

// A failure already phrased with its instance and plugin.
class InstanceError : public Error {
 public:
  using Error::Error;
};

using SharedMapLookup =
    std::function<int(const std::string& instance, const std::string& map)>;

// One instance's part of a load transaction; also the context its plugin's
// hooks see (through the C ABI's context table).
class InstanceTxn final : public HostContext {
 public:
  InstanceTxn(const ResolvedInstance& r, const Manifest& m, const PinLayout& layout,
              std::optional<InstanceState> old, const LoadOptions& lo,
              SharedMapLookup lookup, std::string config_hash,
              std::function<void()> check_cancel)
      : config_hash_(std::move(config_hash)),
        r_(r),
        manifest_(m),
        layout_(layout),
        old_(std::move(old)),
        lo_(lo),
        lookup_(std::move(lookup)),
        check_cancel_(std::move(check_cancel)),
        final_(layout.instance(r.spec->name)),
        staging_(layout.staging(r.spec->name)) {}

  ~InstanceTxn() override = default;

  void stage();
  void commit();
  // Appends what it could not undo to `errors`.
  void rollback(std::vector<std::string>& errors) noexcept;

  // Opens the object and runs before_load only: what load would load, for
  // checks that must not touch the kernel (validate).
  ObjectSpec spec_after_before_load() {
    open_object();
    create_plugin_instance();
    phase_ = Phase::BeforeLoad;
    hook("before_load", &PluginInstance::before_load);
    return object_spec(obj_.get());
  }

  // Map fd of this (staged) instance, for instances sharing its maps.
  int own_map_fd(const std::string& map) const {
    auto* m = bpf_object__find_map_by_name(obj_.get(), map.c_str());
    return m ? bpf_map__fd(m) : -1;
  }
  bool recreated_map(const std::string& map) const {
    return old_ && !reused_maps_.count(map);
  }

  // ---- HostContext
  const std::string& instance_name() const override { return r_.spec->name; }
  const Options& options() const override { return r_.options; }
  const std::string& pin_dir() const override { return final_.dir; }
  void set_global(std::string_view var, const void* data,
                  std::size_t size) override;
  void set_max_entries(std::string_view map, std::uint32_t n) override {
    require(Phase::BeforeLoad, "set_max_entries");
    if (bpf_map__set_max_entries(find_map(map), n) != 0)
      fail("set_max_entries(" + std::string(map) + "): " + errno_text(errno));
  }
  void set_autoload(std::string_view prog, bool load) override {
    require(Phase::BeforeLoad, "set_autoload");
    bpf_program__set_autoload(find_prog(prog), load);
  }
  int map_fd(std::string_view map) const override {
    require_loaded("map_fd");
    return bpf_map__fd(find_map(map));
  }
  int prog_fd(std::string_view prog) const override {
    require_loaded("prog_fd");
    return bpf_program__fd(find_prog(prog));
  }
  void attach_cgroup(std::string_view prog,
                     const std::string& cgroup_path) override;
  void attach_map(std::string_view prog, std::string_view map,
                  std::uint32_t attach_type) override;
  bool attach_auto(std::string_view prog, bool optional) override;
  // The final directory's pin; a shared map's is its owner's.
  std::string pin_path(PinKind kind, std::string_view name) const override {
    if (kind == PinKind::Map)
      for (auto& share : r_.spec->maps)
        if (share.map == name) return layout_.instance(share.instance).map(share.remote_map);
    return final_.pin(kind, name);
  }

 private:
  enum class Phase { Open, BeforeLoad, Loaded, Attach, AfterAttach };

  [[noreturn]] void fail(const std::string& what) const {
    throw InstanceError("instance '" + r_.spec->name + "' (plugin " +
                r_.plugin->info.name + "): " + what);
  }
  void require(Phase p, const char* what) const {
    if (phase_ != p)
      fail(std::string(what) + " called outside the hook that allows it");
  }
  void require_loaded(const char* what) const {
    if (phase_ < Phase::Loaded)
      fail(std::string(what) + " called before the object was loaded");
  }
  bpf_map* find_map(std::string_view name) const {
    auto* m = bpf_object__find_map_by_name(obj_.get(), std::string(name).c_str());
    if (!m) fail("no map named '" + std::string(name) + "' in the BPF object");
    return m;
  }
  bpf_program* find_prog(std::string_view name) const {
    auto* p = bpf_object__find_program_by_name(obj_.get(),
                                               std::string(name).c_str());
    if (!p) fail("no program named '" + std::string(name) + "' in the BPF object");
    return p;
  }
  // The plugin's state for this instance (its create()).
  void create_plugin_instance() {
    try {
      plugin_ = r_.plugin->plugin->create(*this);
    } catch (const std::exception& e) {
      fail(e.what());
    }
  }
  void hook(const char* name, void (PluginInstance::*f)()) {
    try {
      (plugin_.get()->*f)();
    } catch (const PluginHookError& e) {
      if (e.from_context) throw InstanceError(e.what());  // already phrased
      fail(std::string(name) + ": " + e.what());
    }
  }

  std::string link_name(const std::string& prog) {
    int n = link_names_[prog]++;
    return n ? prog + "_" + std::to_string(n) : prog;
  }
  bool update_in_place(const std::string& name, const std::string& target,
                       const std::string& prog, int prog_fd);
  void pin_link_fd(int fd, const std::string& name);
  void record_link(const std::string& name, const std::string& prog,
                   const std::string& target) {
    new_.links.push_back({name, prog, target});
    new_.hooks.push_back({prog, target, true, ""});
    attached_.insert(prog);
  }
  void open_object();
  void bind_maps();
  void load_object();
  void pin_objects();

  std::string config_hash_;
  const ResolvedInstance& r_;
  const Manifest& manifest_;
  const PinLayout& layout_;
  std::optional<InstanceState> old_;
  const LoadOptions& lo_;
  SharedMapLookup lookup_;
  std::function<void()> check_cancel_;
  InstancePaths final_;
  InstancePaths staging_;
  Phase phase_ = Phase::Open;

  BpfObject obj_;
  // The plugin's state for this instance; made after the object is open.
  std::unique_ptr<PluginInstance> plugin_;
  InstanceState new_;
  std::vector<BpfLink> links_;  // created by libbpf; pinned in staging
  std::vector<Fd> link_fds_;    // created by bpf_link_create; pinned too
  struct UpdatedLink {
    Fd link;
    Fd old_prog;
  };
  std::vector<UpdatedLink> updated_links_;
  struct Attachment {
    Fd prog, map;
    bpf_attach_type type;
  };
  std::vector<Attachment> attachments_;  // non-link fallbacks
  std::set<std::string> attached_;
  std::set<std::string> reused_maps_;
  std::map<std::string, int> link_names_;
  bool staging_created_ = false;
};

}  // namespace bpfmgr
