// Second validation stage: each enabled instance's plugin is found and
// loaded, its options are checked against the plugin's schema (and its own
// validate()), and shared maps are checked to exist on both sides. Still
// nothing touches the kernel.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diagnostics.hpp"
#include "manifest.hpp"
#include "plugins.hpp"

namespace bpfmgr {

struct ResolvedInstance {
  const InstanceSpec* spec = nullptr;
  std::shared_ptr<LoadedPlugin> plugin;
  Options options;
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
};

// Room for an instance's options in its state record (64 KiB in all, the
// rest for maps, programs, links and hooks).
inline constexpr std::size_t kMaxRecordedOptionsBytes = 32 * 1024;

std::optional<ResolvedManifest> resolve_manifest(Manifest manifest,
                                                 PluginRegistry& registry,
                                                 Diagnostics& diags);

// Options <-> JSON, for the state record and `status --json`.
nlohmann::json options_to_json(const Options& options);
// Types come from `schema` where it names the key (an empty array has no
// type of its own); keys it does not know are guessed from the JSON.
Options options_from_json(const nlohmann::json& j,
                          const std::vector<OptionSpec>& schema = {});

const char* option_type_name(OptionType t);

}  // namespace bpfmgr
