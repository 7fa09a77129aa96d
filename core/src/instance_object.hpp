// One instance's BPF object as its plugin prepares it: opened from the
// plugin's bytes (open()), then the plugin's state for the instance created
// and its before_load run (prepare(): globals, map sizes, autoload). What
// it holds then is the instance's spec. resolve builds it once per instance
// and manifest; validate reads it and stops, and the load that follows the
// resolve takes it and turns it into kernel objects (instance_txn.hpp), as
// cilium/ebpf's CollectionSpec becomes a Collection.
// It is the HostContext every hook of the instance's plugin sees, from
// create() to the last hook; a load lends it the attachments.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "errno_text.hpp"
#include "handles.hpp"
#include "manifest.hpp"
#include "object_spec.hpp"
#include "pin_layout.hpp"
#include "plugins.hpp"
#include "resolve.hpp"

namespace bpfmgr {

// A failure already phrased with its instance and plugin.
class InstanceError : public Error {
 public:
  using Error::Error;
};

// The plugin's BPF object opened (not loaded), the one way bpfmgr opens
// one. nullptr when libbpf cannot, with its words in `log` when given.
BpfObject open_plugin_object(const LoadedPlugin& plugin, std::string* log = nullptr);

// What a load adds to the context: the attachments its transaction makes.
class InstanceAttacher {
 public:
  virtual void attach_cgroup(std::string_view prog, const std::string& cgroup_path) = 0;
  virtual void attach_map(std::string_view prog, std::string_view map,
                          std::uint32_t attach_type) = 0;
  virtual bool attach_auto(std::string_view prog, bool optional) = 0;

 protected:
  ~InstanceAttacher() = default;
};

class InstanceObject final : public HostContext {
 public:
  // Closed: the object and the plugin's state are gone (a load took it and
  // ended); a later load prepares a new one.
  enum class Phase { Open, BeforeLoad, Loaded, Attach, AfterAttach, Closed };

  InstanceObject(const InstanceSpec& spec, std::shared_ptr<LoadedPlugin> plugin,
                 const Options& options, const std::string& pin_root)
      : spec_(spec),
        plugin_file_(std::move(plugin)),
        options_(options),
        layout_(pin_root.empty() ? "/" : pin_root),
        final_(layout_.instance(spec.name)) {}
  ~InstanceObject() override { close(); }
  InstanceObject(const InstanceObject&) = delete;
  InstanceObject& operator=(const InstanceObject&) = delete;

  // Each throws InstanceError. open() reads the object as built; prepare()
  // then creates the plugin's state and runs before_load.
  void open();
  void prepare();
  // The maps and programs as they are now (after prepare(): as before_load
  // left them).
  ObjectSpec spec() const { return object_spec(obj_.get()); }

  // ---- the load's side (instance_txn.cpp)
  // Prepared, and no load has taken it.
  bool ready_for_load() const { return phase_ == Phase::BeforeLoad && !attacher_; }
  void begin_load(InstanceAttacher& attacher) {
    if (!ready_for_load()) fail("internal error: a load was given an object not prepared for it");
    attacher_ = &attacher;
  }
  // The plugin's state destroyed, then the object closed (its fds with it).
  void close() noexcept {
    plugin_.reset();
    obj_.reset();
    attacher_ = nullptr;
    phase_ = Phase::Closed;
  }
  bpf_object* object() const { return obj_.get(); }
  // Enters phase `p` and runs the plugin's hook of that phase; its failure
  // becomes an InstanceError. The context's calls check the phase.
  void run_hook(Phase p, const char* name, void (PluginInstance::*f)()) {
    phase_ = p;
    try {
      (plugin_.get()->*f)();
    } catch (const PluginHookError& e) {
      if (e.from_context) throw InstanceError(e.what());  // already phrased
      fail(std::string(name) + ": " + e.what());
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw InstanceError("instance '" + spec_.name + "' (plugin " + plugin_file_->info.name +
                        "): " + what);
  }
  bpf_map* find_map(std::string_view name) const {
    auto* m = bpf_object__find_map_by_name(obj_.get(), std::string(name).c_str());
    if (!m) fail("no map named '" + std::string(name) + "' in the BPF object");
    return m;
  }
  bpf_program* find_prog(std::string_view name) const {
    auto* p = bpf_object__find_program_by_name(obj_.get(), std::string(name).c_str());
    if (!p) fail("no program named '" + std::string(name) + "' in the BPF object");
    return p;
  }

  // ---- HostContext
  const std::string& instance_name() const override { return spec_.name; }
  const Options& options() const override { return options_; }
  const std::string& pin_dir() const override { return final_.dir; }
  void set_global(std::string_view var, const void* data, std::size_t size) override;
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
  void attach_cgroup(std::string_view prog, const std::string& cgroup_path) override {
    require(Phase::Attach, "attach_cgroup");
    attacher_->attach_cgroup(prog, cgroup_path);
  }
  void attach_map(std::string_view prog, std::string_view map,
                  std::uint32_t attach_type) override {
    require(Phase::Attach, "attach_map");
    attacher_->attach_map(prog, map, attach_type);
  }
  bool attach_auto(std::string_view prog, bool optional) override {
    require(Phase::Attach, "attach_auto");
    return attacher_->attach_auto(prog, optional);
  }
  // The final directory's pin; a shared map's is its owner's.
  std::string pin_path(PinKind kind, std::string_view name) const override {
    if (kind == PinKind::Map)
      for (auto& share : spec_.maps)
        if (share.map == name) return layout_.instance(share.instance).map(share.remote_map);
    return final_.pin(kind, name);
  }

 private:
  void require(Phase p, const char* what) const {
    if (phase_ != p || (p == Phase::Attach && !attacher_))
      fail(std::string(what) + " called outside the hook that allows it");
  }
  void require_loaded(const char* what) const {
    if (phase_ < Phase::Loaded || phase_ == Phase::Closed)
      fail(std::string(what) + " called before the object was loaded");
  }

  // Copies: the plugin may keep references to what the context returns,
  // and the object outlives the resolve that made it.
  const InstanceSpec spec_;
  const std::shared_ptr<LoadedPlugin> plugin_file_;
  const Options options_;
  const PinLayout layout_;
  const InstancePaths final_;
  Phase phase_ = Phase::Open;
  BpfObject obj_;
  InstanceAttacher* attacher_ = nullptr;
  // The plugin's state for this instance; made after the object is open.
  std::unique_ptr<PluginInstance> plugin_;
};

// A new object for resolved instance `r` under `pin_root`, opened (the one
// place one is made: resolve's, and a later load's when the resolve's is
// spent). Throws InstanceError; prepare() follows.
inline std::shared_ptr<InstanceObject> open_instance_object(const ResolvedInstance& r,
                                                            const std::string& pin_root) {
  auto object = std::make_shared<InstanceObject>(*r.spec, r.plugin, r.options, pin_root);
  object->open();
  return object;
}

}  // namespace bpfmgr
