// Second validation stage: each enabled instance's plugin is found and
// loaded, its options are checked against the plugin's schema (and its own
// validate()) and against the running kernel, its BPF object is opened and
// prepared by the plugin's before_load (instance_object.hpp), and shared
// maps are checked to exist on both sides and, after both plugins'
// before_load, to be the same map. Nothing is loaded into the kernel.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diagnostics.hpp"
#include "manifest.hpp"
#include "plugins.hpp"

namespace bpfmgr {

class InstanceObject;
struct ObjectSpec;

struct ResolvedInstance {
  const InstanceSpec* spec = nullptr;
  std::shared_ptr<LoadedPlugin> plugin;
  Options options;
  // What the plugin needs from the running kernel for these options (all
  // met, or resolve failed) and where it runs a simpler form; the latter
  // goes into the state record at load.
  KernelRequirements kernel;
  // input_fingerprint() of this instance, recorded at load.
  std::string input_fingerprint;
  // The instance's object, opened once and, in a manifest that resolves,
  // prepared (its spec): the load that follows the resolve takes it; every
  // load closes it when it ends, and a later load prepares a new one.
  std::shared_ptr<InstanceObject> object;
};

// Instances point into `manifest`: move it, never copy it.
struct ResolvedManifest {
  ResolvedManifest() = default;
  ResolvedManifest(ResolvedManifest&&) = default;
  ResolvedManifest& operator=(ResolvedManifest&&) = default;
  ResolvedManifest(const ResolvedManifest&) = delete;
  ResolvedManifest& operator=(const ResolvedManifest&) = delete;

  Manifest manifest;
  // Enabled instances, ordered so that map owners come before sharers.
  std::vector<ResolvedInstance> instances;
  // The registry that found the plugins (it outlives this): load unpins
  // instances dropped from the manifest with their plugins from it.
  PluginRegistry* registry = nullptr;
};

// Room for an instance's options in its state record (64 KiB in all, the
// rest for maps, programs, links and hooks).
inline constexpr std::size_t kMaxRecordedOptionsBytes = 32 * 1024;

std::optional<ResolvedManifest> resolve_manifest(Manifest manifest,
                                                 PluginRegistry& registry,
                                                 Diagnostics& diags);

// What an instance is loaded from, as far as it can be told without
// loading its plugin: its manifest entry (options as written, map shares,
// sha256 pin), the pin root, bpfmgr's version and which version of which
// plugin file (`plugin_path` canonical, `id` from fstat). The plugin's
// bytes decide everything else the record's config_hash covers (schema
// defaults, BPF object), so an equal fingerprint means an equal
// config_hash. "" when the file changed within the last two seconds: a
// write in the same ctime tick would leave `id` as it was (git's "racily
// clean" index entries), so such a file is hashed on the next load too.
std::string input_fingerprint(const InstanceSpec& spec, const Manifest& m,
                              const std::string& plugin_path, const FileIdentity& id);

const char* option_type_name(OptionType t);

// A value as the manifest would write it: "auto", true, 3, ["a", "b"].
std::string option_value_text(const OptionValue& v);

// What an instance of `plugin` with `options` needs from `kernel`: what the
// plugin's kernel_requirements() declares, and the core's own need of its
// BPF object as built, `object` (programs that attach through a perf event
// stay attached after bpfmgr exits only as pinned perf_event links; none
// when the object cannot be read). validate, load and `bpfmgr plugins` all
// ask here. Throws Error when the plugin's hook fails.
KernelRequirements kernel_requirements_of(const LoadedPlugin& plugin, const Options& options,
                                          const ObjectSpec* object, KernelFeatures& kernel);

// Asks the instance's plugin what its options need from `kernel`; each
// unmet need becomes an error in `d` at the asking option's line (`key_pos`,
// else the options table), worded with the option's value, the feature, the
// kernel that has it, this kernel's release and the plugin's hint.
KernelRequirements check_kernel_requirements(
    const ResolvedInstance& r, const ObjectSpec* object,
    const std::map<std::string, SourcePos>& key_pos, KernelFeatures& kernel, Diagnostics& d);

}  // namespace bpfmgr
