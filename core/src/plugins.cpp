#include "plugins.hpp"

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <spdlog/spdlog.h>

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <mutex>
#include <tuple>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <cstring>
#include <filesystem>
#include <sstream>

#include <bpfmgr/cgroup.hpp>

#include "plugin_crash.hpp"
#include "plugin_deps.hpp"
#include "plugin_trust.hpp"

#ifndef BPFMGR_INSTALL_PLUGIN_DIR_FULL
#define BPFMGR_INSTALL_PLUGIN_DIR_FULL "/usr/local/lib/bpfmgr/plugins"
#endif

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {
constexpr const char* kEntrySymbol = BPFMGR_PLUGIN_ENTRY_SYMBOL;
// What plugin API 1 (a C++ vtable) exported: recognised to say "rebuild".
constexpr const char* kApi1VersionSymbol = "bpfmgr_plugin_api_version";
constexpr const char* kFilePrefix = "bpfmgr-";
constexpr const char* kFileSuffix = ".so";

bool looks_like_path(const std::string& s) {
  return s.find('/') != std::string::npos ||
         (s.size() > 3 && s.compare(s.size() - 3, 3, ".so") == 0);
}

// The search path's rules, applied by locate().

// A relative `plugin = "..."` resolved against the manifest's directory;
// throws PluginTrustError when the result lies outside that directory
// (after resolving symlinks).
std::string resolve_relative_plugin(const std::string& manifest_dir,
                                    const std::string& relative) {
  std::error_code ec;
  auto base = fs::weakly_canonical(manifest_dir, ec);
  if (ec) base = fs::path(manifest_dir).lexically_normal();
  auto joined = fs::weakly_canonical(base / relative, ec);
  if (ec) joined = (base / relative).lexically_normal();
  auto rel = joined.lexically_relative(base);
  if (rel.empty() || *rel.begin() == ".." || rel.is_absolute())
    throw PluginTrustError(
        "plugin path '" + relative + "' leaves the manifest's directory " +
        base.string() + " (it resolves to " + joined.string() +
        "); give an absolute path, or a plugin name found on plugin_path");
  return joined.string();
}

// BPFMGR_PLUGIN_PATH must not silently replace a plugin of the same name
// from a built-in directory (beside the binary, the install prefix): throws
// PluginTrustError naming both files when `found` (in `env_dirs`) shadows
// one in `builtin_dirs`.
void check_env_shadowing(const std::string& name, const std::string& found,
                         const std::vector<std::string>& env_dirs,
                         const std::vector<std::string>& builtin_dirs) {
  auto found_dir = fs::path(found).parent_path().string();
  bool from_env = false;
  for (auto& d : env_dirs) from_env |= (d == found_dir);
  for (auto& d : builtin_dirs) from_env &= (d != found_dir);
  if (!from_env) return;
  for (auto& d : builtin_dirs) {
    auto builtin = fs::path(d) / (kFilePrefix + name + kFileSuffix);
    std::error_code ec;
    if (fs::exists(builtin, ec))
      throw PluginTrustError(
          "plugin '" + name + "' in BPFMGR_PLUGIN_PATH (" + found +
          ") would replace the installed " + builtin.string() +
          "; bpfmgr does not let an environment variable swap an installed "
          "plugin silently. Name the file by path (plugin = \"" + found +
          "\") or list its directory in the manifest's plugin_path");
  }
}

const char* str_or_empty(const char* s) { return s ? s : ""; }

// The core's error sink for calls into the plugin.
using detail::ErrorText;

std::string failure(const char* call, int rc, const ErrorText& e) {
  if (rc == BPFMGR_ERR_EXCEPTION)
    return std::string(call) + ": " +
           (e.text.empty() ? "threw an exception that is not a std::exception"
                           : e.text);
  if (!e.text.empty()) return e.text;
  return std::string(call) + " failed (code " + std::to_string(rc) + ")";
}

// The plugin's name for log lines, looked up through the host table.
struct HostWithName {
  bpfmgr_host host;
  char name[128];  // the file's name until get_info answers
};
static_assert(std::is_standard_layout_v<HostWithName>);

void host_log(const bpfmgr_host* h, std::uint32_t level, const char* msg,
              std::size_t len) noexcept {
  try {
    auto* self = reinterpret_cast<const HostWithName*>(h);
    auto lvl = level <= BPFMGR_LOG_ERROR
                   ? static_cast<spdlog::level::level_enum>(level)
                   : spdlog::level::err;
    spdlog::log(lvl, "plugin {}: {}", self->name, std::string_view(msg, len));
  } catch (...) {
  }
}
}  // namespace

std::string to_string(const ApiVersion& v) {
  return std::to_string(v.major) + "." + std::to_string(v.minor) + "." +
         std::to_string(v.patch);
}

// ------------------------------------------------------------ HostContext

// The SDK's rule (<bpfmgr/cgroup.hpp>), read once: "" when there is no
// cgroup v2 mount, which resolve_cgroup() names as such.
const std::string& HostContext::cgroup2_root() const {
  static const std::string root = cgroup2_mount();
  return root;
}
void HostContext::unavailable(const char* call) const {
  throw Error(std::string(call) + " is not available in this hook");
}
void HostContext::set_global(std::string_view, const void*, std::size_t) {
  unavailable("set_global");
}
void HostContext::set_max_entries(std::string_view, std::uint32_t) {
  unavailable("set_max_entries");
}
void HostContext::set_autoload(std::string_view, bool) { unavailable("set_autoload"); }
int HostContext::map_fd(std::string_view) const { unavailable("map_fd"); }
int HostContext::prog_fd(std::string_view) const { unavailable("prog_fd"); }
void HostContext::attach_cgroup(std::string_view, const std::string&) {
  unavailable("attach_cgroup");
}
void HostContext::attach_map(std::string_view, std::string_view, std::uint32_t) {
  unavailable("attach_map");
}
bool HostContext::attach_auto(std::string_view, bool) { unavailable("attach_auto"); }
void HostContext::add_counter(Counter) { unavailable("add_counter"); }
void HostContext::add_detail(std::string, std::string) { unavailable("add_detail"); }
void HostContext::add_metric(Metric) { unavailable("add_metric"); }
std::string HostContext::pin_path(PinKind, std::string_view) const {
  unavailable("pin_path");
}

// ---------------------------------------------------------- ContextBridge

ContextBridge::ContextBridge(HostContext& host)
    : c_{{&kOps}, this}, host_(host), options_(host.options()) {}

ContextBridge& ContextBridge::of(const bpfmgr_context* c) {
  return *reinterpret_cast<const C*>(c)->self;
}

template <class F>
int ContextBridge::call(bpfmgr_context* c, bpfmgr_error* err, F&& f) noexcept {
  auto& self = of(c);
  auto report = [&](const char* msg, int rc) {
    try {
      self.last_error_ = msg;
    } catch (...) {
    }
    detail::set_error(err, msg);
    return rc;
  };
  try {
    f(self.host_);
    return BPFMGR_OK;
  } catch (const std::exception& e) {
    return report(e.what(), BPFMGR_ERR_FAILED);
  } catch (...) {
    return report("internal error", BPFMGR_ERR_FAILED);
  }
}

const bpfmgr_context_ops ContextBridge::kOps = [] {
  bpfmgr_context_ops o{};
  o.size = sizeof(o);
  o.instance_name = [](const bpfmgr_context* c) {
    return of(c).host_.instance_name().c_str();
  };
  o.pin_dir = [](const bpfmgr_context* c) { return of(c).host_.pin_dir().c_str(); };
  o.cgroup2_root = [](const bpfmgr_context* c) {
    return of(c).host_.cgroup2_root().c_str();
  };
  o.options = [](const bpfmgr_context* c) { return of(c).options_.get(); };
  o.set_global = [](bpfmgr_context* c, const char* var, const void* data, std::size_t size,
                    bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) { h.set_global(str_or_empty(var), data, size); });
  };
  o.set_max_entries = [](bpfmgr_context* c, const char* map, std::uint32_t n,
                         bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) { h.set_max_entries(str_or_empty(map), n); });
  };
  o.set_autoload = [](bpfmgr_context* c, const char* prog, int load, bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) { h.set_autoload(str_or_empty(prog), load != 0); });
  };
  o.map_fd = [](bpfmgr_context* c, const char* map, int* fd, bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) { *fd = h.map_fd(str_or_empty(map)); });
  };
  o.prog_fd = [](bpfmgr_context* c, const char* prog, int* fd, bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) { *fd = h.prog_fd(str_or_empty(prog)); });
  };
  o.attach_cgroup = [](bpfmgr_context* c, const char* prog, const char* path,
                       bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) {
      h.attach_cgroup(str_or_empty(prog), str_or_empty(path));
    });
  };
  o.attach_map = [](bpfmgr_context* c, const char* prog, const char* map,
                    std::uint32_t type, bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) {
      h.attach_map(str_or_empty(prog), str_or_empty(map), type);
    });
  };
  o.attach_auto = [](bpfmgr_context* c, const char* prog, int optional, int* attached,
                     bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) {
      bool ok = h.attach_auto(str_or_empty(prog), optional != 0);
      if (attached) *attached = ok;
    });
  };
  o.add_counter = [](bpfmgr_context* c, const char* name, std::uint64_t value,
                     const std::uint64_t* per_cpu, std::size_t n, bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) {
      Counter counter{str_or_empty(name), value, {}};
      if (per_cpu) counter.per_cpu.assign(per_cpu, per_cpu + n);
      h.add_counter(std::move(counter));
    });
  };
  o.add_detail = [](bpfmgr_context* c, const char* key, const char* value,
                    bpfmgr_error* err) {
    return call(c, err,
                [&](HostContext& h) { h.add_detail(str_or_empty(key), str_or_empty(value)); });
  };
  o.pin_path = [](const bpfmgr_context* c, std::uint32_t kind, const char* name,
                  const char** path, bpfmgr_error* err) {
    auto& self = of(c);
    return call(const_cast<bpfmgr_context*>(c), err, [&](HostContext& h) {
      PinKind k;
      switch (kind) {
        case BPFMGR_PIN_MAP: k = PinKind::Map; break;
        case BPFMGR_PIN_PROG: k = PinKind::Prog; break;
        case BPFMGR_PIN_LINK: k = PinKind::Link; break;
        default: throw Error("pin_path: unknown kind " + std::to_string(kind));
      }
      std::string n = str_or_empty(name);
      if (auto why = pin_name_problem(n); !why.empty())
        throw Error("pin_path: " + why);
      auto& slot = self.pin_paths_[{kind, n}];
      if (slot.empty()) slot = h.pin_path(k, n);
      *path = slot.c_str();
    });
  };
  o.kernel = [](const bpfmgr_context* c) -> const bpfmgr_kernel* {
    return of(c).kernel_.get();
  };
  o.add_metric = [](bpfmgr_context* c, const char* name, std::uint32_t kind,
                    const char* help, const bpfmgr_label* labels, std::size_t n_labels,
                    double value, bpfmgr_error* err) {
    return call(c, err, [&](HostContext& h) {
      if (kind != BPFMGR_METRIC_COUNTER && kind != BPFMGR_METRIC_GAUGE)
        throw Error("add_metric(" + std::string(str_or_empty(name)) + "): unknown kind " +
                    std::to_string(kind));
      if (n_labels && !labels) throw Error("add_metric: labels missing");
      Metric m{str_or_empty(name), static_cast<MetricKind>(kind), value, {},
               str_or_empty(help)};
      for (std::size_t i = 0; i < n_labels; ++i)
        m.labels.emplace_back(str_or_empty(labels[i].name), str_or_empty(labels[i].value));
      h.add_metric(std::move(m));
    });
  };
  return o;
}();

namespace {
bool metric_word(const std::string& s) {
  return !s.empty() && !std::isdigit(static_cast<unsigned char>(s[0])) &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '_';
         });
}
}  // namespace

void check_metric(const StatusReport& report, const Metric& m) {
  auto refuse = [&](const std::string& why) {
    throw Error("add_metric(" + m.name + "): " + why);
  };
  if (!metric_word(m.name)) refuse("a metric name is [a-zA-Z_][a-zA-Z0-9_]*");
  if (m.kind == MetricKind::Counter && m.name.size() >= 6 &&
      m.name.compare(m.name.size() - 6, 6, "_total") == 0)
    refuse("counters get _total appended; name it without");
  if (m.kind == MetricKind::Counter && !(m.value >= 0))  // NaN too
    refuse("a counter's value must be a number >= 0");
  std::vector<std::string> names;
  for (auto& [name, value] : m.labels) {
    if (!metric_word(name) || name.rfind("__", 0) == 0)
      refuse("label name '" + name + "' is not [a-zA-Z_][a-zA-Z0-9_]* (nor starts with __)");
    for (const char* ours : {"instance", "instance_name", "plugin", "job"})
      if (name == ours) refuse("label '" + name + "' is bpfmgr's or Prometheus's own");
    if (std::find(names.begin(), names.end(), name) != names.end())
      refuse("label '" + name + "' given twice");
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  for (auto& other : report.metrics) {
    if (other.name != m.name) continue;
    if (other.kind != m.kind) refuse("its samples disagree on counter or gauge");
    std::vector<std::string> theirs;
    for (auto& l : other.labels) theirs.push_back(l.first);
    std::sort(theirs.begin(), theirs.end());
    if (theirs != names) refuse("its samples disagree on label names");
    auto sorted = [](auto v) {
      std::sort(v.begin(), v.end());
      return v;
    };
    if (sorted(other.labels) == sorted(m.labels)) refuse("a sample with these labels exists");
  }
}

// --------------------------------------------------------- PluginInstance

PluginInstance::PluginInstance(std::shared_ptr<const PluginModule> module,
                               HostContext& host)
    : module_(std::move(module)), bridge_(host), instance_(host.instance_name()) {
  const auto& api = module_->api();
  if (!api.create) return;  // a stateless plugin
  ErrorText e;
  PluginCallScope scope(module_->name(), "create", host.instance_name(),
                        crash_consequence("create", host.instance_name()));
  state_ = api.create(bridge_.get(), &e);
  if (!state_)
    throw PluginHookError("create: " + (e.text.empty() ? std::string("returned no state")
                                                       : e.text),
                          false);
}

PluginInstance::~PluginInstance() {
  if (!state_ || !module_->api().destroy) return;
  // The host may be gone by now: only what was copied from it is used.
  try {
    PluginCallScope scope(module_->name(), "destroy", instance_,
                          crash_consequence("destroy", instance_));
    module_->api().destroy(state_);
  } catch (...) {  // the scope's strings; destroy itself is noexcept C
  }
}

void PluginInstance::run(Hook hook, const char* name) {
  if (!hook) return;
  bridge_.clear_error();
  ErrorText e;
  PluginCallScope scope(module_->name(), name, instance_, crash_consequence(name, instance_));
  int rc = hook(state_, bridge_.get(), &e);
  if (rc == BPFMGR_OK && !bridge_.kernel_misuse().empty())
    throw PluginHookError(bridge_.kernel_misuse(), false);
  if (rc == BPFMGR_OK) return;
  // A hook that fails because a context call failed passes the core's own
  // message back: report that, phrased as the core phrased it.
  bool from_context = !bridge_.last_error().empty() && e.text == bridge_.last_error();
  throw PluginHookError(from_context ? e.text
                        : rc == BPFMGR_ERR_EXCEPTION
                            ? (e.text.empty() ? "threw an exception that is not a "
                                                "std::exception"
                                              : e.text)
                            : (e.text.empty() ? "failed (code " + std::to_string(rc) + ")"
                                              : e.text),
                        from_context);
}

void PluginInstance::before_load() { run(module_->api().before_load, "before_load"); }
void PluginInstance::after_load() { run(module_->api().after_load, "after_load"); }
void PluginInstance::attach() { run(module_->api().attach, "attach"); }
void PluginInstance::after_attach() { run(module_->api().after_attach, "after_attach"); }
void PluginInstance::status() { run(module_->api().status, "status"); }
void PluginInstance::before_unpin() { run(module_->api().before_unpin, "before_unpin"); }

std::optional<std::string> PluginInstance::text(
    const std::function<int(char*, std::size_t, std::size_t*)>& call) {
  PluginCallScope scope(module_->name(), "format_event", instance_,
                        crash_consequence("format_event", instance_));
  if (buffer_.empty()) buffer_.resize(4096);
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::size_t len = 0;
    int rc = call(buffer_.data(), buffer_.size(), &len);
    if (rc == BPFMGR_OK) {
      if (len == 0) return std::nullopt;
      return std::string(buffer_.data(), std::min(len, buffer_.size() - 1));
    }
    if (rc != BPFMGR_ERR_NO_SPACE || len + 1 <= buffer_.size())
      throw PluginHookError(rc == BPFMGR_ERR_EXCEPTION
                                ? "the event formatter threw an exception that is "
                                  "not a std::exception"
                                : "the event formatter failed (code " +
                                      std::to_string(rc) + ")",
                            false);
    buffer_.resize(len + 1);
  }
  throw PluginHookError("the event formatter keeps asking for more room", false);
}

std::string PluginInstance::event_header() {
  if (!module_->api().event_header) return {};
  return text([&](char* buf, std::size_t cap, std::size_t* len) {
           return module_->api().event_header(state_, buf, cap, len);
         })
      .value_or("");
}

std::optional<std::string> PluginInstance::format_event(std::span<const std::byte> record,
                                                        EventFormat format) {
  if (!module_->api().format_event)
    throw PluginHookError("the plugin has no event formatter", false);
  return text([&](char* buf, std::size_t cap, std::size_t* len) {
    return module_->api().format_event(state_, record.data(), record.size(),
                                       static_cast<std::uint32_t>(format), buf, cap, len);
  });
}

// ----------------------------------------------------------- PluginModule

PluginModule::PluginModule(std::shared_ptr<boost::dll::shared_library> lib,
                           std::string path, const bpfmgr_plugin_api& table,
                           std::shared_ptr<const void> host)
    : lib_(std::move(lib)), path_(std::move(path)), table_(table), host_(std::move(host)) {}

// The library is unloaded by lib_'s destructor, after everything else here.
PluginModule::~PluginModule() = default;

std::string PluginModule::name() const {
  return static_cast<const HostWithName*>(host_.get())->name;
}

PluginInfo PluginModule::info() const {
  bpfmgr_plugin_info c{};
  ErrorText e;
  PluginCallScope scope(name(), "get_info", "", crash_consequence("get_info", ""));
  int rc = table_.get_info(&c, &e);
  if (rc != BPFMGR_OK) throw Error("get_info: " + failure("get_info", rc, e));
  if (!c.name || !*c.name) throw Error("get_info: the plugin gave no name");
  return {c.name, str_or_empty(c.version), str_or_empty(c.description)};
}

std::span<const std::byte> PluginModule::bpf_object() const {
  const void* data = nullptr;
  std::size_t size = 0;
  ErrorText e;
  PluginCallScope scope(name(), "get_bpf_object", "", crash_consequence("get_bpf_object", ""));
  int rc = table_.get_bpf_object(&data, &size, &e);
  if (rc != BPFMGR_OK) throw Error("get_bpf_object: " + failure("get_bpf_object", rc, e));
  if (!data || size == 0) throw Error("get_bpf_object: the plugin gave no BPF object");
  return {static_cast<const std::byte*>(data), size};
}

std::vector<OptionSpec> PluginModule::option_schema() const {
  if (!table_.option_schema) return {};
  const bpfmgr_option_spec* specs = nullptr;
  std::size_t count = 0;
  ErrorText e;
  PluginCallScope scope(name(), "option_schema", "", crash_consequence("option_schema", ""));
  int rc = table_.option_schema(&specs, &count, &e);
  if (rc != BPFMGR_OK) throw Error("option_schema: " + failure("option_schema", rc, e));
  std::vector<OptionSpec> out;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& c = specs[i];
    if (!c.name || c.type < BPFMGR_OPTION_BOOL || c.type > BPFMGR_OPTION_INT_LIST)
      throw Error("option_schema: entry " + std::to_string(i) +
                  " has no name or an unknown type");
    OptionSpec s;
    s.name = c.name;
    s.type = static_cast<OptionType>(c.type);
    s.description = str_or_empty(c.description);
    if (c.has_default) {
      if (c.default_value.type != c.type)
        throw Error("option_schema: default of '" + s.name + "' has another type");
      s.default_value = detail::value_from_c(c.default_value);
    }
    if (c.has_min) s.min = c.min;
    if (c.has_max) s.max = c.max;
    for (std::size_t k = 0; k < c.n_choices; ++k) s.choices.emplace_back(c.choices[k]);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<OptionProblem> PluginModule::validate(const Options& options) const {
  if (!table_.validate) return {};
  struct Sink : bpfmgr_problems {
    std::vector<OptionProblem> found;
  } sink;
  sink.add = [](bpfmgr_problems* self, const char* key, const char* msg, const char* hint) {
    try {
      static_cast<Sink*>(self)->found.push_back(
          {str_or_empty(key), str_or_empty(msg), str_or_empty(hint)});
    } catch (...) {
    }
  };
  detail::OptionsView view(options);
  ErrorText e;
  PluginCallScope scope(name(), "validate", "", crash_consequence("validate", ""));
  int rc = table_.validate(view.get(), &sink, &e);
  if (rc != BPFMGR_OK) throw Error("validate: " + failure("validate", rc, e));
  return std::move(sink.found);
}

std::optional<std::string> PluginModule::events_map() const {
  if (!table_.events_map) return std::nullopt;
  const char* map = nullptr;
  ErrorText e;
  int rc = table_.events_map(&map, &e);
  if (rc != BPFMGR_OK) throw Error("events_map: " + failure("events_map", rc, e));
  if (!map) return std::nullopt;
  return std::string(map);
}

KernelRequirements PluginModule::kernel_requirements(const Options& options,
                                                    KernelFeatures& kernel) const {
  KernelRequirements out;
  if (!BPFMGR_HAS_FIELD(&table_, bpfmgr_plugin_api, kernel_requirements) ||
      !table_.kernel_requirements)
    return out;
  out.declared = true;
  KernelBridge bridge(kernel, &out);
  detail::OptionsView view(options);
  ErrorText e;
  int rc = table_.kernel_requirements(view.get(), bridge.get(), &e);
  if (rc != BPFMGR_OK)
    throw Error("kernel_requirements: " + failure("kernel_requirements", rc, e));
  return out;
}

std::unique_ptr<PluginInstance> PluginModule::create(HostContext& host) const {
  return std::make_unique<PluginInstance>(shared_from_this(), host);
}

// --------------------------------------------------------- PluginRegistry

namespace {
std::string normalised_dir(const std::string& d) {
  std::error_code ec;
  auto norm = fs::weakly_canonical(d, ec).string();
  return ec ? d : norm;
}
// Appends `dir` unless it is there already (the first place is kept).
void add_dir(std::vector<std::string>& dirs, const std::string& dir) {
  if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
}
}  // namespace

PluginRegistry::PluginRegistry(std::vector<std::string> extra_dirs) {
  // Search order: the manifest's, the environment's, the built-in
  // directories; each normalised once, duplicates dropped (first kept).
  for (auto& d : extra_dirs) add_dir(head_dirs_, normalised_dir(d));
  if (const char* env = std::getenv("BPFMGR_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string d; std::getline(ss, d, ':');)
      if (!d.empty()) {
        env_dirs_.push_back(normalised_dir(d));
        add_dir(head_dirs_, env_dirs_.back());
      }
  }
}

const std::vector<std::string>& PluginRegistry::builtin_dirs() const {
  std::call_once(builtin_once_, [this] {
    auto exe_dir = boost::dll::program_location().parent_path();
    auto beside = exe_dir.parent_path() / "lib/bpfmgr/plugins";
    builtin_dirs_.push_back(normalised_dir(beside.string()));
    builtin_dirs_.push_back(normalised_dir(BPFMGR_INSTALL_PLUGIN_DIR_FULL));
  });
  return builtin_dirs_;
}

const std::vector<std::string>& PluginRegistry::search_dirs() const {
  std::call_once(search_once_, [this] {
    search_dirs_ = head_dirs_;
    for (auto& d : builtin_dirs()) add_dir(search_dirs_, d);
  });
  return search_dirs_;
}

std::map<std::string, std::string> PluginRegistry::discover() const {
  std::map<std::string, std::string> found;
  for (auto& dir : search_dirs()) {
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

std::string PluginRegistry::locate(const std::string& name_or_path,
                                   const std::string& base_dir) const {
  if (name_or_path.empty()) throw PluginLoadError("plugin name is empty");
  if (looks_like_path(name_or_path)) {
    fs::path p(name_or_path);
    if (p.is_relative()) return resolve_relative_plugin(base_dir, name_or_path);
    return p.string();
  }
  auto file = kFilePrefix + name_or_path + kFileSuffix;
  auto in = [&](const std::string& dir) {
    std::error_code ec;
    auto candidate = (fs::path(dir) / file).string();
    return fs::exists(candidate, ec) ? candidate : std::string();
  };
  for (auto& dir : head_dirs_)
    if (auto found = in(dir); !found.empty()) {
      if (std::find(env_dirs_.begin(), env_dirs_.end(), dir) != env_dirs_.end())
        check_env_shadowing(name_or_path, found, env_dirs_, builtin_dirs());
      return found;
    }
  // The built-in directories not searched already: search_dirs() is
  // head_dirs_ followed by them.
  const auto& all = search_dirs();
  for (auto it = all.begin() + head_dirs_.size(); it != all.end(); ++it)
    if (auto found = in(*it); !found.empty()) return found;
  std::string msg = "plugin '" + name_or_path + "' not found; searched:";
  for (auto& d : search_dirs()) msg += " " + d;
  throw PluginLoadError(msg);
}

std::shared_ptr<LoadedPlugin> PluginRegistry::load(
    const std::string& name_or_path, const std::string& base_dir,
    const std::string& expected_sha256) {
  return load_file(locate(name_or_path, base_dir), expected_sha256,
                   "by the manifest's sha256");
}

namespace {
// Which required entries a table lacks.
std::vector<std::string> missing_entries(const bpfmgr_plugin_api& api) {
  std::vector<std::string> missing;
  if (!api.get_info) missing.push_back("get_info");
  if (!api.get_bpf_object) missing.push_back("get_bpf_object");
  if (!api.create != !api.destroy)
    missing.push_back(api.create ? "destroy (create is set)" : "create (destroy is set)");
  return missing;
}
}  // namespace

namespace {
// Every plugin library this process dlopened, by the sha256 of its bytes,
// for the life of the process. Libraries are loaded RTLD_NODELETE: C++
// plugins' unique symbols keep them mapped after dlclose anyway, and an
// explicit rule beats an accident. Each was mapped from its own sealed
// memfd, kept open here, so no later dlopen can be handed an old library
// for a new file by a reused /proc/self/fd/N name or inode; identical
// bytes (wherever they come from) share one library, which is the same
// code. A library whose checks failed after dlopen keeps its message.
struct ProcessLibrary {
  Fd memfd;
  std::shared_ptr<LoadedPlugin> loaded;  // path: the first file it came from
  std::string refusal;                   // set when it is not a usable plugin
  std::string first_path;                // the file `refusal` names
};
std::mutex g_libraries_mu;
std::map<std::string, ProcessLibrary> g_libraries;
// Which bytes a file version held when it was read: a fresh registry (a
// serve reload) re-checks the file but reads and hashes it again only
// when its identity changed.
struct IdentityLess {
  bool operator()(const FileIdentity& a, const FileIdentity& b) const {
    return std::tie(a.dev, a.ino, a.size, a.mtime_ns, a.ctime_ns) <
           std::tie(b.dev, b.ino, b.size, b.mtime_ns, b.ctime_ns);
  }
};
std::map<FileIdentity, std::string, IdentityLess> g_sha_by_identity;
}  // namespace

std::shared_ptr<LoadedPlugin> PluginRegistry::load_file(
    const std::string& path, const std::string& expected_sha256,
    const std::string& hash_origin) {
  check_loader_environment();
  // Owner and mode are checked on every call, before any code of the file
  // runs; the content is hashed and loaded only when the file is not the
  // version this registry already loaded.
  auto file = open_trusted_file(path, "load plugin");
  if (auto it = cache_.find(file.path); it != cache_.end() && it->second.id == file.id) {
    check_plugin_hash(it->first, it->second.loaded->sha256, expected_sha256, hash_origin);
    return it->second.loaded;
  }
  auto key = file.path;
  auto id = file.id;
  auto remember = [&](const std::shared_ptr<LoadedPlugin>& shared) {
    auto loaded = std::make_shared<LoadedPlugin>(*shared);
    loaded->path = key;
    loaded->id = id;
    cache_[key] = {id, loaded};
    return loaded;
  };
  auto refused = [&](const ProcessLibrary& lib) {
    // Worded for the file it was first loaded from: name this one.
    auto why = lib.refusal;
    if (auto pos = why.find(lib.first_path); pos != std::string::npos)
      why.replace(pos, lib.first_path.size(), key);
    return PluginLoadError(why);
  };

  std::lock_guard guard(g_libraries_mu);
  if (auto known = g_sha_by_identity.find(id); known != g_sha_by_identity.end()) {
    auto& lib = g_libraries.at(known->second);
    check_plugin_hash(key, known->second, expected_sha256, hash_origin);
    if (!lib.refusal.empty()) throw refused(lib);
    return remember(lib.loaded);
  }
  auto copy = seal_plugin_copy(std::move(file));
  check_plugin_hash(copy.path, copy.sha256, expected_sha256, hash_origin);
  if (auto it = g_libraries.find(copy.sha256); it != g_libraries.end()) {
    g_sha_by_identity[id] = copy.sha256;
    if (!it->second.refusal.empty()) throw refused(it->second);
    return remember(it->second.loaded);
  }
  check_dependency_closure(copy.fd.get(), key);

  auto lib = std::make_shared<boost::dll::shared_library>();
  boost::dll::fs::error_code bec;
  lib->load(copy.load_path(),
            boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local |
                static_cast<boost::dll::load_mode::type>(RTLD_NODELETE),
            bec);
  if (bec) {
    std::string why = bec.message();
    if (auto pos = why.find(copy.load_path()); pos != std::string::npos)
      why.replace(pos, copy.load_path().size(), key);
    throw PluginLoadError("cannot load plugin " + key + ": " + why);
  }
  auto& slot = g_libraries[copy.sha256];
  slot.memfd = std::move(copy.fd);
  g_sha_by_identity[id] = copy.sha256;
  try {
    auto loaded = open_plugin_table(lib, key, copy.sha256);
    slot.loaded = loaded;
    return remember(loaded);
  } catch (const std::exception& e) {
    slot.refusal = e.what();
    slot.first_path = key;
    throw;
  }
}

std::shared_ptr<LoadedPlugin> PluginRegistry::open_plugin_table(
    std::shared_ptr<boost::dll::shared_library> lib, const std::string& key,
    const std::string& sha256) {
  const ApiVersion ours = kPluginApiVersion;
  if (!lib->has(kEntrySymbol)) {
    if (lib->has(kApi1VersionSymbol)) {
      const auto& old = lib->get<const ApiVersion>(kApi1VersionSymbol);
      throw PluginLoadError(key + " was built for plugin API " + to_string(old) +
                            " but this bpfmgr provides " + to_string(ours) +
                            " (major versions differ); rebuild the plugin against "
                            "this SDK");
    }
    throw PluginLoadError(key + " is not a bpfmgr plugin: it does not export " +
                          kEntrySymbol +
                          " (C++: say BPFMGR_PLUGIN(YourClass) in one source file; "
                          "C: define bpfmgr_plugin_entry, see bpfmgr/plugin_api.h)");
  }

  auto host = std::make_shared<HostWithName>();
  host->host.size = sizeof(bpfmgr_host);
  host->host.api_major = ours.major;
  host->host.api_minor = ours.minor;
  host->host.api_patch = ours.patch;
  host->host.log = &host_log;
  std::snprintf(host->name, sizeof host->name, "%s",
                fs::path(key).filename().c_str());
  auto entry = lib->get<const bpfmgr_plugin_api*(const bpfmgr_host*)>(kEntrySymbol);
  const bpfmgr_plugin_api* api = nullptr;
  {
    PluginCallScope scope(host->name, kEntrySymbol, "",
                          crash_consequence(kEntrySymbol, ""));
    api = entry(&host->host);
  }
  if (!api)
    throw PluginLoadError(key + ": " + kEntrySymbol +
                          " returned no function table (the plugin refused this "
                          "bpfmgr, plugin API " + to_string(ours) +
                          "; its log lines above may say why)");
  ApiVersion theirs{api->api_major, api->api_minor, api->api_patch};
  bool newer = theirs.major > ours.major ||
               (theirs.major == ours.major && theirs.minor > ours.minor);
  if (theirs.major != ours.major || newer)
    throw PluginLoadError(
        key + " was built for plugin API " + to_string(theirs) +
        " but this bpfmgr provides " + to_string(ours) +
        (newer ? (theirs.major != ours.major ? " (major versions differ)"
                                             : " (the plugin needs a newer minor version)") +
                     std::string("; upgrade bpfmgr")
               : std::string(" (major versions differ); rebuild the plugin against "
                             "this SDK")));
  if (api->size < BPFMGR_PLUGIN_API_MIN_SIZE)
    throw PluginLoadError(key + ": its function table is " + std::to_string(api->size) +
                          " bytes, plugin API " + to_string(theirs) + " needs at least " +
                          std::to_string(BPFMGR_PLUGIN_API_MIN_SIZE) +
                          "; rebuild the plugin against this SDK");
  // Fields past what the plugin was compiled with read as NULL.
  bpfmgr_plugin_api table{};
  std::memcpy(&table, api, std::min(api->size, sizeof(bpfmgr_plugin_api)));
  if (auto missing = missing_entries(table); !missing.empty()) {
    std::string msg = key + " (plugin API " + to_string(theirs) +
                      ") lacks required entries:";
    for (auto& m : missing) msg += " " + m;
    throw PluginLoadError(msg);
  }

  auto module = std::make_shared<PluginModule>(lib, key, table, host);

  auto loaded = std::make_shared<LoadedPlugin>();
  loaded->path = key;
  loaded->sha256 = sha256;
  loaded->api = theirs;
  loaded->plugin = module;
  try {
    loaded->info = module->info();
    loaded->bpf_object = module->bpf_object();
  } catch (const std::exception& e) {
    throw PluginLoadError(key + ": " + e.what());
  }
  std::snprintf(host->name, sizeof host->name, "%s", loaded->info.name.c_str());
  spdlog::debug("loaded plugin {} {} (API {}) from {}", loaded->info.name,
                loaded->info.version, to_string(theirs), key);
  return loaded;
}

}  // namespace bpfmgr
