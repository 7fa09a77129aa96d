#include "plugins.hpp"

#include "plugin_trust.hpp"

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <sstream>

#ifndef BPFMGR_INSTALL_PLUGIN_DIR_FULL
#define BPFMGR_INSTALL_PLUGIN_DIR_FULL "/usr/local/lib/bpfmgr/plugins"
#endif

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {
constexpr const char* kVersionSymbol = "bpfmgr_plugin_api_version";
constexpr const char* kCreateSymbol = "bpfmgr_plugin_create";
constexpr const char* kFilePrefix = "bpfmgr-";
constexpr const char* kFileSuffix = ".so";

bool looks_like_path(const std::string& s) {
  return s.find('/') != std::string::npos ||
         (s.size() > 3 && s.compare(s.size() - 3, 3, ".so") == 0);
}
}  // namespace

std::string to_string(const ApiVersion& v) {
  return std::to_string(v.major) + "." + std::to_string(v.minor) + "." +
         std::to_string(v.patch);
}

PluginRegistry::PluginRegistry(std::vector<std::string> extra_dirs)
    : dirs_(std::move(extra_dirs)) {
  auto normal = [](const std::string& d) {
    std::error_code ec;
    auto norm = fs::weakly_canonical(d, ec).string();
    return ec ? d : norm;
  };
  if (const char* env = std::getenv("BPFMGR_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string d; std::getline(ss, d, ':');)
      if (!d.empty()) {
        dirs_.push_back(d);
        env_dirs_.push_back(normal(d));
      }
  }
  auto exe_dir = boost::dll::program_location().parent_path();
  builtin_dirs_.push_back(normal((exe_dir.parent_path() / "lib/bpfmgr/plugins").string()));
  builtin_dirs_.push_back(normal(BPFMGR_INSTALL_PLUGIN_DIR_FULL));
  dirs_.insert(dirs_.end(), builtin_dirs_.begin(), builtin_dirs_.end());
  // Drop duplicates (after normalising), keeping the first occurrence.
  std::vector<std::string> unique;
  for (auto& d : dirs_) {
    auto norm = normal(d);
    if (std::find(unique.begin(), unique.end(), norm) == unique.end())
      unique.push_back(norm);
  }
  dirs_ = std::move(unique);
}

std::map<std::string, std::string> PluginRegistry::discover() const {
  std::map<std::string, std::string> found;
  for (auto& dir : dirs_) {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec)) {
      auto f = e.path().filename().string();
      std::string_view prefix = kFilePrefix, suffix = kFileSuffix;
      if (f.size() <= prefix.size() + suffix.size() || f.rfind(prefix, 0) != 0 ||
          f.compare(f.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      auto name = f.substr(prefix.size(), f.size() - prefix.size() - suffix.size());
      found.emplace(name, e.path().string());
    }
  }
  return found;
}

std::shared_ptr<LoadedPlugin> PluginRegistry::load(
    const std::string& name_or_path, const std::string& base_dir,
    const std::string& expected_sha256) {
  if (name_or_path.empty()) throw PluginLoadError("plugin name is empty");
  const std::string why = "by the manifest's sha256";
  if (looks_like_path(name_or_path)) {
    fs::path p(name_or_path);
    if (p.is_relative())
      return load_file(resolve_relative_plugin(base_dir, name_or_path),
                       expected_sha256, why);
    return load_file(p.string(), expected_sha256, why);
  }
  for (auto& dir : dirs_) {
    auto candidate = fs::path(dir) / (kFilePrefix + name_or_path + kFileSuffix);
    std::error_code ec;
    if (fs::exists(candidate, ec)) {
      check_env_shadowing(name_or_path, candidate.string(), env_dirs_,
                          builtin_dirs_);
      return load_file(candidate.string(), expected_sha256, why);
    }
  }
  std::string msg = "plugin '" + name_or_path + "' not found; searched:";
  for (auto& d : dirs_) msg += " " + d;
  throw PluginLoadError(msg);
}

std::shared_ptr<LoadedPlugin> PluginRegistry::load_file(
    const std::string& path, const std::string& expected_sha256,
    const std::string& hash_origin) {
  // A library already loaded is the code that runs, whatever its file
  // became since: its hash is the one taken when it was loaded.
  std::error_code ec;
  if (auto canonical = fs::canonical(path, ec); !ec)
    if (auto it = cache_.find(canonical.string()); it != cache_.end()) {
      check_plugin_hash(it->first, it->second->sha256, expected_sha256, hash_origin);
      return it->second;
    }
  // Owner, mode and content are checked before any code of the file runs;
  // the library is then loaded through the checked descriptor.
  auto trusted = open_trusted_plugin(path);
  check_plugin_hash(trusted.path, trusted.sha256, expected_sha256, hash_origin);
  auto key = trusted.path;

  // glibc knows a library loaded through /proc/self/fd/N by that name and
  // hands it out again for any later dlopen of the same name: the
  // descriptor stays open, its number taken, until the library is unloaded.
  struct FdLoadedLibrary {
    Fd fd;
    boost::dll::shared_library lib;  // destroyed (dlclose) before fd closes
  };
  auto load_path = trusted.load_path();
  auto holder = std::make_shared<FdLoadedLibrary>();
  holder->fd = std::move(trusted.fd);
  std::shared_ptr<boost::dll::shared_library> lib(holder, &holder->lib);
  boost::system::error_code bec;
  lib->load(load_path, boost::dll::load_mode::rtld_now |
                           boost::dll::load_mode::rtld_local, bec);
  if (bec) throw PluginLoadError("cannot load plugin " + key + ": " + bec.message());

  std::vector<std::string> missing;
  for (auto* sym : {kVersionSymbol, kCreateSymbol})
    if (!lib->has(sym)) missing.push_back(sym);
  if (!missing.empty()) {
    std::string msg = key + " is not a bpfmgr plugin: missing symbol";
    for (auto& m : missing) msg += " " + m;
    throw PluginLoadError(msg + " (build it with BPFMGR_PLUGIN(YourClass))");
  }

  const auto& api = lib->get<const ApiVersion>(kVersionSymbol);
  const auto& ours = kPluginApiVersion;
  if (api.major != ours.major || api.minor > ours.minor)
    throw PluginLoadError(
        key + " was built for plugin API " + to_string(api) +
        " but this bpfmgr provides " + to_string(ours) +
        (api.major != ours.major ? " (major versions differ)"
                                 : " (plugin needs a newer minor version)") +
        "; rebuild the plugin against this SDK");

  auto create = lib->get<Plugin*()>(kCreateSymbol);
  Plugin* raw = nullptr;
  try {
    raw = create();
  } catch (const std::exception& e) {
    throw PluginLoadError(key + ": plugin constructor failed: " + e.what());
  }
  if (!raw) throw PluginLoadError(key + ": bpfmgr_plugin_create returned null");
  // The deleter owns the library: the plugin's destructor (code in the
  // library) runs before the library can be unloaded.
  std::shared_ptr<Plugin> plugin(raw, [lib](Plugin* p) { delete p; });

  auto loaded = std::make_shared<LoadedPlugin>();
  loaded->path = key;
  loaded->sha256 = trusted.sha256;
  loaded->api = api;
  loaded->plugin = std::move(plugin);
  try {
    loaded->info = loaded->plugin->info();
  } catch (const std::exception& e) {
    throw PluginLoadError(key + ": info() failed: " + e.what());
  }
  spdlog::debug("loaded plugin {} {} (API {}) from {}", loaded->info.name,
                loaded->info.version, to_string(api), key);
  cache_[key] = loaded;
  return loaded;
}

}  // namespace bpfmgr
