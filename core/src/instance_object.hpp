// One instance's BPF object as its plugin prepares it, never loaded: opened
// from the plugin's bytes, the plugin's state for the instance created, its
// before_load run (globals, map sizes, autoload). What it holds then is the
// instance's spec: validate reads it and stops; a load's transaction
// (instance_txn.hpp) is one of these that goes on to load it.
// It is the HostContext the plugin's create() and before_load see.
#pragma once

#include <bpf/libbpf.h>

#include <memory>
#include <string>
#include <string_view>

#include "errno_text.hpp"
#include "handles.hpp"
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

class InstanceObject : public HostContext {
 public:
  InstanceObject(const ResolvedInstance& r, const PinLayout& layout)
      : r_(r), layout_(layout), final_(layout.instance(r.spec->name)) {}
  ~InstanceObject() override = default;

  // Opens the object, creates the plugin's state and runs before_load.
  // Throws InstanceError.
  void prepare();
  // The maps as before_load left them.
  ObjectSpec spec() const { return object_spec(obj_.get()); }

  // ---- HostContext
  const std::string& instance_name() const override { return r_.spec->name; }
  const Options& options() const override { return r_.options; }
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
  // The final directory's pin; a shared map's is its owner's.
  std::string pin_path(PinKind kind, std::string_view name) const override {
    if (kind == PinKind::Map)
      for (auto& share : r_.spec->maps)
        if (share.map == name) return layout_.instance(share.instance).map(share.remote_map);
    return final_.pin(kind, name);
  }

 protected:
  enum class Phase { Open, BeforeLoad, Loaded, Attach, AfterAttach };

  [[noreturn]] void fail(const std::string& what) const {
    throw InstanceError("instance '" + r_.spec->name + "' (plugin " + r_.plugin->info.name +
                        "): " + what);
  }
  void require(Phase p, const char* what) const {
    if (phase_ != p) fail(std::string(what) + " called outside the hook that allows it");
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
    auto* p = bpf_object__find_program_by_name(obj_.get(), std::string(name).c_str());
    if (!p) fail("no program named '" + std::string(name) + "' in the BPF object");
    return p;
  }
  void hook(const char* name, void (PluginInstance::*f)()) {
    try {
      (plugin_.get()->*f)();
    } catch (const PluginHookError& e) {
      if (e.from_context) throw InstanceError(e.what());  // already phrased
      fail(std::string(name) + ": " + e.what());
    }
  }

  const ResolvedInstance& r_;
  const PinLayout& layout_;
  InstancePaths final_;
  Phase phase_ = Phase::Open;
  BpfObject obj_;
  // The plugin's state for this instance; made after the object is open.
  std::unique_ptr<PluginInstance> plugin_;
};

}  // namespace bpfmgr
