// Finding and loading plugin libraries (Boost.DLL), and calling them through
// the C ABI of bpfmgr/plugin_api.h. Everything the core asks a plugin goes
// through PluginModule (questions without an instance) or PluginInstance
// (hooks of one instance): both turn the plugin's error codes and messages
// into exceptions on the core's side, and nothing the core throws ever
// reaches plugin code.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <bpfmgr/plugin.hpp>
#include <bpfmgr/plugin_api.h>

#include "kernel_features.hpp"
#include "pin_layout.hpp"

namespace boost::dll {
class shared_library;
}

namespace bpfmgr {

class PluginLoadError : public Error {
 public:
  using Error::Error;
};

// A hook failed. `from_context` when the failure was a context call the
// plugin made (the message is then already phrased by the core).
class PluginHookError : public Error {
 public:
  PluginHookError(std::string message, bool from_context)
      : Error(std::move(message)), from_context(from_context) {}
  bool from_context;
};

std::string to_string(const ApiVersion& v);

// What the core implements for a plugin's hooks: the C context table calls
// these. Each throws bpfmgr::Error on failure (the message reaches the
// plugin, and the core's own error when the hook fails because of it).
class HostContext {
 public:
  virtual ~HostContext() = default;
  virtual const std::string& instance_name() const = 0;
  virtual const Options& options() const = 0;
  virtual const std::string& pin_dir() const = 0;
  virtual const std::string& cgroup2_root() const;

  virtual void set_global(std::string_view var, const void* data, std::size_t size);
  virtual void set_max_entries(std::string_view map, std::uint32_t n);
  virtual void set_autoload(std::string_view prog, bool load);
  virtual int map_fd(std::string_view map) const;
  virtual int prog_fd(std::string_view prog) const;
  virtual void attach_cgroup(std::string_view prog, const std::string& cgroup_path);
  virtual void attach_map(std::string_view prog, std::string_view map,
                          std::uint32_t attach_type);
  virtual bool attach_auto(std::string_view prog, bool optional);
  virtual void add_counter(Counter counter);
  virtual void add_detail(std::string key, std::string value);
  // status only (API 2.2): one typed, labelled sample (check_metric first).
  virtual void add_metric(Metric metric);
  // Where `name` of this instance is (or will be, once committed) pinned.
  virtual std::string pin_path(PinKind kind, std::string_view name) const;

 protected:
  [[noreturn]] void unavailable(const char* call) const;
};

// The C face of a HostContext, handed to the plugin.
class ContextBridge {
 public:
  explicit ContextBridge(HostContext& host);
  ContextBridge(const ContextBridge&) = delete;
  ContextBridge& operator=(const ContextBridge&) = delete;

  bpfmgr_context* get() { return &c_.ctx; }
  // The message of the last context call that failed ("" if none).
  const std::string& last_error() const { return last_error_; }
  void clear_error() {
    last_error_.clear();
    kernel_.clear_misuse();
  }
  // Why the plugin's use of the kernel view was refused ("" if it was not).
  const std::string& kernel_misuse() const { return kernel_.misuse(); }

 private:
  struct C {
    bpfmgr_context ctx;
    ContextBridge* self;
  };
  static ContextBridge& of(const bpfmgr_context* c);
  template <class F>
  static int call(bpfmgr_context* c, bpfmgr_error* err, F&& f) noexcept;
  static const bpfmgr_context_ops kOps;

  C c_;
  HostContext& host_;
  detail::OptionsView options_;
  std::string last_error_;
  // pin_path() answers, kept for the context's life (std::map nodes
  // never move).
  std::map<std::pair<std::uint32_t, std::string>, std::string> pin_paths_;
  // What the kernel() op hands out: has and release only.
  KernelBridge kernel_{KernelFeatures::running(), nullptr};
};

// Why `m` cannot join the samples `report` has (API 2.2 add_metric): its
// name and label names are metric-name safe, label names are none of the
// core's own (instance, instance_name, plugin, job), samples of one name
// agree on kind and label names, no sample repeats another's labels, a
// counter is finite and not negative. Throws Error.
void check_metric(const StatusReport& report, const Metric& m);

class PluginModule;

// One instance's plugin state, made by the plugin's create() and freed by
// its destroy(). `host` must outlive it.
class PluginInstance {
 public:
  PluginInstance(std::shared_ptr<const PluginModule> module, HostContext& host);
  ~PluginInstance();
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  // Each throws PluginHookError when the plugin reports a failure.
  void before_load();
  void after_load();
  void attach();
  void after_attach();
  void status();  // counters and details go to the HostContext
  void before_unpin();
  // Event lines; nullopt skips the record. Throws on a formatter failure.
  std::string event_header();
  std::optional<std::string> format_event(std::span<const std::byte> record,
                                          EventFormat format);

 private:
  using Hook = int (*)(bpfmgr_instance*, bpfmgr_context*, bpfmgr_error*);
  void run(Hook hook, const char* name);
  std::optional<std::string> text(
      const std::function<int(char*, std::size_t, std::size_t*)>& call);

  std::shared_ptr<const PluginModule> module_;
  ContextBridge bridge_;
  std::string instance_;  // for crash messages, the host's may be gone by destroy
  bpfmgr_instance* state_ = nullptr;
  std::vector<char> buffer_;
};

// A loaded plugin library and its function table; keeps the library loaded
// while any PluginModule or PluginInstance refers to it.
class PluginModule : public std::enable_shared_from_this<PluginModule> {
 public:
  // `table`: the plugin's table, copied, with fields past its size NULL.
  // `host`: what the plugin's entry point was given (must stay put).
  PluginModule(std::shared_ptr<boost::dll::shared_library> lib, std::string path,
               const bpfmgr_plugin_api& table, std::shared_ptr<const void> host);
  ~PluginModule();

  const bpfmgr_plugin_api& api() const { return table_; }
  // Its name for messages (the file's name until get_info answered).
  std::string name() const;

  PluginInfo info() const;
  std::span<const std::byte> bpf_object() const;
  std::vector<OptionSpec> option_schema() const;
  std::vector<OptionProblem> validate(const Options& options) const;
  std::optional<std::string> events_map() const;
  // What an instance with `options` needs from `kernel` (API 2.2); an
  // empty, undeclared answer from a plugin without kernel_requirements.
  KernelRequirements kernel_requirements(const Options& options,
                                         KernelFeatures& kernel) const;

  std::unique_ptr<PluginInstance> create(HostContext& host) const;

 private:
  std::shared_ptr<boost::dll::shared_library> lib_;
  std::string path_;
  bpfmgr_plugin_api table_;
  std::shared_ptr<const void> host_;
};

// Which file, and which version of it (plugin_trust.cpp fills it from
// fstat): a file renamed over or rewritten in place differs in one field.
struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  long long mtime_ns = 0, ctime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};

struct LoadedPlugin {
  std::string path;  // canonical path of the .so
  FileIdentity id;   // the version of that file it was read from
  std::string sha256;  // of the file's content when it was loaded
  ApiVersion api{};
  PluginInfo info;
  std::shared_ptr<PluginModule> plugin;
  // The plugin's BPF object, asked for once: it lives in the plugin's
  // mapping, which stays (RTLD_NODELETE) for the life of the process.
  std::span<const std::byte> bpf_object;
};

class PluginRegistry {
 public:
  // Search order: `extra_dirs` (the manifest's plugin_path), then
  // $BPFMGR_PLUGIN_PATH, then next to the binary
  // (<exe>/../lib/bpfmgr/plugins), then the install prefix.
  explicit PluginRegistry(std::vector<std::string> extra_dirs = {});

  // The whole search path, normalised (the built-in directories only when
  // first needed: a plugin found in the manifest's directory never asks).
  const std::vector<std::string>& search_dirs() const;

  // `name_or_path`: a plugin name (found as bpfmgr-NAME.so on the search
  // path) or a path to a .so (relative to `base_dir`, and inside it).
  // Cached per file. A non-empty `expected_sha256` must match the file.
  // Trust checks (plugin_trust.hpp) throw PluginTrustError.
  std::shared_ptr<LoadedPlugin> load(const std::string& name_or_path,
                                     const std::string& base_dir = ".",
                                     const std::string& expected_sha256 = "");
  // The file load() would load for `name_or_path`, found by the same
  // search; nothing is opened or run. Throws PluginLoadError (not found)
  // and PluginTrustError (a path that leaves `base_dir`, an environment
  // directory shadowing an installed plugin).
  std::string locate(const std::string& name_or_path, const std::string& base_dir = ".") const;
  // Loads one file directly, checking trust (its dependencies' too), ABI
  // version and function table. The file is re-checked on every call and
  // its library reused only while it is the same version; libraries are
  // shared process-wide by the sha256 of their bytes and never unloaded
  // (see load_file in plugins.cpp).
  // `hash_origin` says where `expected_sha256` came from, for the message.
  std::shared_ptr<LoadedPlugin> load_file(const std::string& path,
                                          const std::string& expected_sha256 = "",
                                          const std::string& hash_origin = "");

  // Every bpfmgr-*.so on the search path (first match per name wins).
  std::map<std::string, std::string> discover() const;

 private:
  // The entry point's table of a library just loaded, checked.
  static std::shared_ptr<LoadedPlugin> open_plugin_table(
      std::shared_ptr<boost::dll::shared_library> lib, const std::string& key,
      const std::string& sha256);
  const std::vector<std::string>& builtin_dirs() const;
  std::vector<std::string> head_dirs_;  // the manifest's, then the environment's
  // By canonical path; reused only while the file is the same version.
  struct Cached {
    FileIdentity id;
    std::shared_ptr<LoadedPlugin> loaded;
  };
  std::map<std::string, Cached> cache_;
  std::vector<std::string> env_dirs_;      // from $BPFMGR_PLUGIN_PATH
  // Beside the binary, the install prefix; then the whole path. Made on
  // first use (normalising is a readlink per path component).
  mutable std::once_flag builtin_once_, search_once_;
  mutable std::vector<std::string> builtin_dirs_, search_dirs_;
};

}  // namespace bpfmgr
