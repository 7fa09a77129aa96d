// Finding and loading plugin libraries (Boost.DLL). A plugin object keeps
// its library loaded: the library is released only after the last
// shared_ptr to the plugin is gone.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <bpfmgr/plugin.hpp>

namespace bpfmgr {

struct LoadedPlugin {
  std::string path;  // canonical path of the .so
  std::string sha256;  // of the file's content when it was loaded
  ApiVersion api{};
  PluginInfo info;
  std::shared_ptr<Plugin> plugin;
};

class PluginLoadError : public Error {
 public:
  using Error::Error;
};

std::string to_string(const ApiVersion& v);

class PluginRegistry {
 public:
  // Search order: `extra_dirs` (the manifest's plugin_path), then
  // $BPFMGR_PLUGIN_PATH, then next to the binary
  // (<exe>/../lib/bpfmgr/plugins), then the install prefix.
  explicit PluginRegistry(std::vector<std::string> extra_dirs = {});

  const std::vector<std::string>& search_dirs() const { return dirs_; }

  // `name_or_path`: a plugin name (found as bpfmgr-NAME.so on the search
  // path) or a path to a .so (relative to `base_dir`, and inside it).
  // Cached per file. A non-empty `expected_sha256` must match the file.
  // Trust checks (plugin_trust.hpp) throw PluginTrustError.
  std::shared_ptr<LoadedPlugin> load(const std::string& name_or_path,
                                     const std::string& base_dir = ".",
                                     const std::string& expected_sha256 = "");
  // Loads one file directly, checking trust, ABI version and entry points;
  // `hash_origin` says where `expected_sha256` came from, for the message.
  std::shared_ptr<LoadedPlugin> load_file(const std::string& path,
                                          const std::string& expected_sha256 = "",
                                          const std::string& hash_origin = "");

  // Every bpfmgr-*.so on the search path (first match per name wins).
  std::map<std::string, std::string> discover() const;

 private:
  std::vector<std::string> dirs_;
  std::vector<std::string> env_dirs_;      // from $BPFMGR_PLUGIN_PATH
  std::vector<std::string> builtin_dirs_;  // beside the binary, install prefix
  std::map<std::string, std::shared_ptr<LoadedPlugin>> cache_;
};

}  // namespace bpfmgr
