// The TOML manifest: parsing and the structural checks that need no plugin
// (keys, types, names, duplicates). Checks against plugin schemas happen in
// resolve.hpp. Nothing here touches the kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "diagnostics.hpp"
#include "run_dir.hpp"  // kDefaultPinRoot

namespace bpfmgr {

// Largest manifest accepted (docs/manifest.md); real ones are a few KiB.
inline constexpr std::size_t kMaxManifestBytes = 1 << 20;

// `[instance.maps] local = "other"` or `local = { instance = "other", map = "m" }`:
// this instance's map `local` is the one instance `other` pinned as `m`.
struct MapShareSpec {
  std::string map;
  std::string instance;
  std::string remote_map;
  SourcePos pos;
};

// An option value as the manifest wrote it, with its position, before a
// plugin's schema types it (resolve.hpp). No TOML type leaves the parser.
struct RawValue {
  enum class Kind { Bool, Int, String, Array, Other };
  Kind kind = Kind::Other;
  bool boolean = false;
  std::int64_t integer = 0;
  std::string string;
  std::vector<RawValue> items;  // Array
  SourcePos pos;
};

struct RawOption {
  std::string key;
  SourcePos key_pos;
  RawValue value;
};

struct InstanceSpec {
  std::string name;
  SourcePos pos;
  std::string plugin;
  SourcePos plugin_pos;
  // Optional `sha256 = "..."`: the plugin file must have this content.
  std::string sha256;
  bool enabled = true;
  std::vector<RawOption> options;  // sorted by key
  SourcePos options_pos;
  std::vector<MapShareSpec> maps;
};

struct Manifest {
  std::string path;           // as given, used in messages
  std::string absolute_path;  // recorded in state records; "" for text
  std::string dir;   // base for relative paths in the manifest
  std::string text;  // raw content, hashed into the state record
  std::string pin_root = kDefaultPinRoot;
  SourcePos pin_root_pos;
  std::vector<std::string> plugin_path;
  std::vector<InstanceSpec> instances;

  const InstanceSpec* find(const std::string& name) const;
};

// Parses and checks structure; problems go to `diags` (all of them). The
// manifest is returned unless the TOML itself is malformed, even when
// `diags` has errors: resolve_manifest() then reports plugin-level problems
// of the well-formed instances too.
std::optional<Manifest> parse_manifest_text(const std::string& text,
                                            const std::string& display_path,
                                            const std::string& base_dir,
                                            Diagnostics& diags);
std::optional<Manifest> parse_manifest_file(const std::string& path,
                                            Diagnostics& diags);

// Instance names become directory names under the pin root.
bool valid_instance_name(const std::string& name);

}  // namespace bpfmgr
