// bpfmgr plugin SDK for C++: a header-only layer over the C ABI in
// plugin_api.h. A plugin derives from bpfmgr::Plugin, overrides the hooks
// it needs and says BPFMGR_PLUGIN(MyPlugin) in one source file.
//
// What this layer does for you:
//  - builds the C function table and the one exported entry point;
//  - gives each instance its own MyPlugin object (members are per-instance
//    state); info, bpf_object, option_schema, validate and events_map run on
//    one more object that is never given an instance;
//  - catches everything a hook throws, including what is not a
//    std::exception (`throw 42`), and reports it to the core as an error
//    code and message: the load then rolls back;
//  - turns a failed context call (an unknown map, set_global outside
//    before_load, ...) into a bpfmgr::Error thrown in your hook.
//
// A plugin needs libbpf (for the skeleton and map access) and nothing else:
// no spdlog (use bpfmgr::log), no Boost, and any C++20 standard library.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <bpfmgr/plugin_api.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace bpfmgr {

struct ApiVersion {
  std::uint32_t major;
  std::uint32_t minor;
  std::uint32_t patch;
};

inline constexpr ApiVersion kPluginApiVersion{BPFMGR_PLUGIN_API_MAJOR,
                                              BPFMGR_PLUGIN_API_MINOR,
                                              BPFMGR_PLUGIN_API_PATCH};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- logging

enum class LogLevel : std::uint32_t {
  Trace = BPFMGR_LOG_TRACE,
  Debug = BPFMGR_LOG_DEBUG,
  Info = BPFMGR_LOG_INFO,
  Warn = BPFMGR_LOG_WARN,
  Error = BPFMGR_LOG_ERROR,
};

namespace detail {
// The core's host table, set by the entry point (one per plugin library).
inline const bpfmgr_host*& host() {
  static const bpfmgr_host* h = nullptr;
  return h;
}
}  // namespace detail

// Through bpfmgr's logger (shown per --log-level / BPFMGR_LOG_LEVEL).
inline void log(LogLevel level, std::string_view message) noexcept {
  const bpfmgr_host* h = detail::host();
  if (h && h->log) h->log(h, static_cast<std::uint32_t>(level), message.data(), message.size());
}
inline void log_debug(std::string_view m) noexcept { log(LogLevel::Debug, m); }
inline void log_info(std::string_view m) noexcept { log(LogLevel::Info, m); }
inline void log_warn(std::string_view m) noexcept { log(LogLevel::Warn, m); }
inline void log_error(std::string_view m) noexcept { log(LogLevel::Error, m); }

// ---------------------------------------------------------------- options
// A plugin publishes a schema; the core checks the manifest against it
// (unknown keys, types, ranges, choices, with file:line:column and "did you
// mean") before anything touches the kernel, then fills in defaults.

enum class OptionType {
  Bool = BPFMGR_OPTION_BOOL,
  Int = BPFMGR_OPTION_INT,
  String = BPFMGR_OPTION_STRING,
  StringList = BPFMGR_OPTION_STRING_LIST,
  IntList = BPFMGR_OPTION_INT_LIST,
};

using OptionValue = std::variant<bool, std::int64_t, std::string,
                                 std::vector<std::string>,
                                 std::vector<std::int64_t>>;

struct OptionSpec {
  std::string name;
  OptionType type;
  std::string description;
  // Absent default means the option is required.
  std::optional<OptionValue> default_value;
  // Inclusive bounds for Int and for every element of IntList.
  std::optional<std::int64_t> min;
  std::optional<std::int64_t> max;
  // Allowed values for String and for every element of StringList.
  std::vector<std::string> choices;
};

class Options {
 public:
  Options() = default;
  explicit Options(std::map<std::string, OptionValue> values)
      : values_(std::move(values)) {}

  bool has(const std::string& key) const { return values_.count(key) != 0; }
  const std::map<std::string, OptionValue>& all() const { return values_; }

  bool get_bool(const std::string& key) const { return get<bool>(key); }
  std::int64_t get_int(const std::string& key) const {
    return get<std::int64_t>(key);
  }
  const std::string& get_string(const std::string& key) const {
    return get<std::string>(key);
  }
  const std::vector<std::string>& get_strings(const std::string& key) const {
    return get<std::vector<std::string>>(key);
  }
  const std::vector<std::int64_t>& get_ints(const std::string& key) const {
    return get<std::vector<std::int64_t>>(key);
  }

 private:
  template <class T>
  const T& get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end())
      throw Error("option '" + key + "' is not set (missing from schema?)");
    if (auto* v = std::get_if<T>(&it->second)) return *v;
    throw Error("option '" + key + "' has another type than requested");
  }
  std::map<std::string, OptionValue> values_;
};

// A semantic problem found by Plugin::validate(); `key` names the option so
// the core can point at its line and column in the manifest.
struct OptionProblem {
  std::string key;
  std::string message;
  std::string hint;  // optional, shown as "hint: ..."
};

// ----------------------------------------------------------------- status

struct Counter {
  std::string name;
  std::uint64_t value = 0;
  // Filled for per-CPU counters; `value` is then their sum.
  std::vector<std::uint64_t> per_cpu;
};

// A Prometheus sample (API 2.2): exported as bpfmgr_plugin_<plugin>_<name>
// (`_total` appended to counters) with the instance's labels and `labels`.
// Samples of one name agree on kind and label names. Use a label, not the
// name, for what varies (a syscall, a port): names stay fixed.
enum class MetricKind : std::uint32_t {
  Counter = BPFMGR_METRIC_COUNTER,
  Gauge = BPFMGR_METRIC_GAUGE,
};

struct Metric {
  std::string name;
  MetricKind kind = MetricKind::Counter;
  double value = 0;
  std::vector<std::pair<std::string, std::string>> labels;
  std::string help;
};

struct StatusReport {
  std::vector<Counter> counters;
  // Free-form facts ("hooks live", "cgroup", ...), shown as key: value.
  std::vector<std::pair<std::string, std::string>> details;
  // Typed, labelled samples for /metrics (needs bpfmgr with API 2.2; an
  // older core shows counters and details only).
  std::vector<Metric> metrics;
};

// ---------------------------------------------------------- kernel features
// What the running kernel has, from one probe per bpfmgr process (API 2.2).
// Names are those of bpfmgr_feature_kind in plugin_api.h.

enum class Feature : std::uint32_t {
  ProgType = BPFMGR_FEATURE_PROG_TYPE,          // "sk_msg"
  MapType = BPFMGR_FEATURE_MAP_TYPE,            // "sk_storage"
  Helper = BPFMGR_FEATURE_HELPER,               // "sock_ops:bpf_get_netns_cookie"
  Kfunc = BPFMGR_FEATURE_KFUNC,                 // "bpf_rdonly_cast"
  BtfType = BPFMGR_FEATURE_BTF_TYPE,            // "struct tcp_sock"
  BtfField = BPFMGR_FEATURE_BTF_FIELD,          // "struct tcp_sock.snd_una"
  BtfEnumValue = BPFMGR_FEATURE_BTF_ENUM_VALUE, // "BPF_SOCK_OPS_HDR_OPT_LEN_CB"
  Tracepoint = BPFMGR_FEATURE_TRACEPOINT,       // "tcp/tcp_retransmit_skb"
  LinkType = BPFMGR_FEATURE_LINK_TYPE,          // "perf_event"
};

// Read-only view: what the kernel has. Plugins pick program variants with
// it in before_load, deciding as their kernel_requirements() did.
class KernelView {
 public:
  explicit KernelView(const bpfmgr_kernel* k) : k_(k) {}
  bool has(Feature kind, const std::string& name) const {
    return k_->ops->has(k_, static_cast<std::uint32_t>(kind), name.c_str()) != 0;
  }
  std::string release() const {
    const char* r = k_->ops->release(k_);
    return r ? r : "";
  }

 protected:
  const bpfmgr_kernel* k_;
};

// What Plugin::kernel_requirements() fills in: needs, checked by the core
// before anything loads, and degradations, shown by status and metrics.
class KernelNeeds : public KernelView {
 public:
  explicit KernelNeeds(bpfmgr_kernel* k) : KernelView(k), mk_(k) {}
  // The instance needs `name`; `option` is the manifest key that asks for it
  // (empty: the plugin itself), `since` the first Linux release that has it,
  // `hint` what to change instead.
  void require(Feature kind, const std::string& name, const std::string& option = {},
               const std::string& since = {}, const std::string& hint = {}) {
    mk_->ops->require(mk_, static_cast<std::uint32_t>(kind), name.c_str(),
                      option.empty() ? nullptr : option.c_str(),
                      since.empty() ? nullptr : since.c_str(),
                      hint.empty() ? nullptr : hint.c_str());
  }
  // The instance runs `what` on this kernel `because` ...
  void degrade(const std::string& what, const std::string& because) {
    mk_->ops->degrade(mk_, what.c_str(), because.c_str());
  }

 private:
  bpfmgr_kernel* mk_;
};

// Entry `key` of a per-CPU map (PERCPU_ARRAY or PERCPU_HASH): one T per
// possible CPU. The kernel lays per-CPU values out 8-byte aligned, so T's
// size must be a multiple of 8.
template <class T>
std::vector<T> read_percpu(int map_fd, std::uint32_t key = 0) {
  static_assert(sizeof(T) % 8 == 0, "per-CPU values are 8-byte aligned");
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) throw Error("cannot count the possible CPUs");
  std::vector<T> values(static_cast<std::size_t>(ncpu));
  if (bpf_map_lookup_elem(map_fd, &key, values.data()) != 0)
    throw Error("per-CPU map lookup of key " + std::to_string(key) +
                " failed: " + std::strerror(errno));
  return values;
}

// A counter summed over CPUs, keeping the per-CPU values. With a member
// pointer, from one field of per-CPU structs; without, from plain values.
template <class T, class Field>
Counter percpu_counter(std::string name, const std::vector<T>& values,
                       Field T::*field) {
  Counter c{std::move(name), 0, {}};
  for (auto& v : values) {
    c.per_cpu.push_back(static_cast<std::uint64_t>(v.*field));
    c.value += static_cast<std::uint64_t>(v.*field);
  }
  return c;
}
inline Counter percpu_counter(std::string name,
                              const std::vector<std::uint64_t>& values) {
  Counter c{std::move(name), 0, values};
  for (auto v : values) c.value += v;
  return c;
}

// ------------------------------------------------- C <-> C++ conversions
// Used by this layer and by the core; not needed by plugin authors.
namespace detail {

// Collects an error message from the other side of the boundary.
struct ErrorText final : bpfmgr_error {
  std::string text;
  ErrorText() { set = &ErrorText::store; }
  static void store(bpfmgr_error* self, const char* m, std::size_t n) noexcept {
    try {
      static_cast<ErrorText*>(self)->text.assign(m ? m : "", m ? n : 0);
    } catch (...) {
    }
  }
};

inline void set_error(bpfmgr_error* err, const char* message) noexcept {
  if (err && err->set && message) err->set(err, message, std::strlen(message));
}

inline OptionValue value_from_c(const bpfmgr_option_value& v) {
  switch (v.type) {
    case BPFMGR_OPTION_BOOL: return v.boolean != 0;
    case BPFMGR_OPTION_INT: return std::int64_t{v.integer};
    case BPFMGR_OPTION_STRING: return std::string(v.string ? v.string : "");
    case BPFMGR_OPTION_STRING_LIST: {
      std::vector<std::string> out;
      for (std::size_t i = 0; i < v.count; ++i)
        out.emplace_back(v.strings[i] ? v.strings[i] : "");
      return out;
    }
    case BPFMGR_OPTION_INT_LIST:
      return std::vector<std::int64_t>(v.integers, v.integers + v.count);
  }
  throw Error("option value of unknown type " + std::to_string(v.type));
}

inline Options options_from_c(const bpfmgr_options* o) {
  std::map<std::string, OptionValue> values;
  if (o)
    for (std::size_t i = 0; i < o->count; ++i)
      values.emplace(o->items[i].key, value_from_c(o->items[i].value));
  return Options(std::move(values));
}

// C views of C++ values; the views point into the values they were made
// from (and into this object), which must outlive them.
class CValues {
 public:
  bpfmgr_option_value view(const OptionValue& v) {
    bpfmgr_option_value c{};
    c.type = static_cast<std::uint32_t>(v.index() + 1);
    if (auto* b = std::get_if<bool>(&v)) c.boolean = *b ? 1 : 0;
    if (auto* i = std::get_if<std::int64_t>(&v)) c.integer = *i;
    if (auto* s = std::get_if<std::string>(&v)) c.string = s->c_str();
    if (auto* l = std::get_if<std::vector<std::string>>(&v)) {
      auto& ptrs = lists_.emplace_back();
      for (auto& s : *l) ptrs.push_back(s.c_str());
      c.strings = ptrs.data();
      c.count = l->size();
    }
    if (auto* l = std::get_if<std::vector<std::int64_t>>(&v)) {
      c.integers = l->data();
      c.count = l->size();
    }
    return c;
  }
  const char* const* strings(const std::vector<std::string>& v) {
    auto& ptrs = lists_.emplace_back();
    for (auto& s : v) ptrs.push_back(s.c_str());
    return ptrs.data();
  }

 private:
  // A deque-like list: growing it never moves earlier vectors' buffers.
  struct Lists {
    std::vector<std::unique_ptr<std::vector<const char*>>> v;
    std::vector<const char*>& emplace_back() {
      v.push_back(std::make_unique<std::vector<const char*>>());
      return *v.back();
    }
  } lists_;
};

// An Options as a bpfmgr_options view.
class OptionsView {
 public:
  explicit OptionsView(const Options& o) {
    for (auto& [k, v] : o.all()) items_.push_back({k.c_str(), values_.view(v)});
    c_ = {items_.data(), items_.size()};
  }
  OptionsView(const OptionsView&) = delete;
  OptionsView& operator=(const OptionsView&) = delete;
  const bpfmgr_options* get() const { return &c_; }

 private:
  CValues values_;
  std::vector<bpfmgr_option> items_;
  bpfmgr_options c_{};
};

inline void check(int rc, const ErrorText& e, const char* what) {
  if (rc == BPFMGR_OK) return;
  throw Error(e.text.empty() ? std::string(what) + " failed (code " +
                                   std::to_string(rc) + ")"
                             : e.text);
}

inline std::string pin_path(bpfmgr_context* ctx, bpfmgr_pin_kind kind, std::string_view name) {
  if (!BPFMGR_HAS_FIELD(ctx->ops, bpfmgr_context_ops, pin_path))
    throw Error("pin paths need bpfmgr with plugin API 2.1 or newer");
  ErrorText e;
  const char* path = nullptr;
  check(ctx->ops->pin_path(ctx, kind, std::string(name).c_str(), &path, &e), e, "pin_path");
  return path;
}

}  // namespace detail

// ------------------------------------------------------------- contexts

// What every context has: the instance's name, options and pins. The
// core owns every libbpf handle; file descriptors handed out are borrowed
// and stay valid for the duration of the hook.
class ContextBase {
 public:
  const std::string& instance_name() const { return name_; }
  const Options& options() const { return options_; }
  // <pin_root>/<instance>
  const std::string& pin_dir() const { return pin_dir_; }
  // Where this instance's map, program or link `name` is pinned once the
  // load is committed (a shared map: its owner's pin), as bpftool sees it.
  // Never build these paths from pin_dir(). The pin may not exist (e.g.
  // the link of an optional hook that did not attach).
  std::string map_pin_path(std::string_view map) const {
    return detail::pin_path(ctx_, BPFMGR_PIN_MAP, map);
  }
  std::string prog_pin_path(std::string_view prog) const {
    return detail::pin_path(ctx_, BPFMGR_PIN_PROG, prog);
  }
  std::string link_pin_path(std::string_view link) const {
    return detail::pin_path(ctx_, BPFMGR_PIN_LINK, link);
  }
  // The running kernel's features (bpfmgr with API 2.2 or newer).
  KernelView kernel() const {
    if (!BPFMGR_HAS_FIELD(ctx_->ops, bpfmgr_context_ops, kernel) || !ctx_->ops->kernel)
      throw Error("kernel features need bpfmgr with plugin API 2.2 or newer");
    return KernelView(ctx_->ops->kernel(ctx_));
  }
  // The instance's map (or the map it shares from another instance). In a
  // load: from after_load on. Pinned: opens the pin. Throws if absent.
  int map_fd(std::string_view map) const {
    detail::ErrorText e;
    int fd = -1;
    detail::check(ctx_->ops->map_fd(ctx_, std::string(map).c_str(), &fd, &e), e, "map_fd");
    return fd;
  }

 protected:
  ContextBase(bpfmgr_context* ctx, const Options& options)
      : ctx_(ctx),
        options_(options),
        name_(ctx->ops->instance_name(ctx)),
        pin_dir_(ctx->ops->pin_dir(ctx)) {}
  ContextBase(const ContextBase&) = delete;
  ContextBase& operator=(const ContextBase&) = delete;

  bpfmgr_context* ctx_;

 private:
  const Options& options_;
  std::string name_, pin_dir_;
};

// What a lifecycle hook of a load sees of its instance. A call outside the
// hook that allows it throws.
class InstanceContext : public ContextBase {
 public:
  InstanceContext(bpfmgr_context* ctx, const Options& options) : ContextBase(ctx, options) {}

  // Mount point of cgroup v2, found in /proc/self/mounts (read when first
  // asked: most plugins never do).
  const std::string& cgroup2_root() const {
    if (!cgroup2_root_) cgroup2_root_ = ctx_->ops->cgroup2_root(ctx_);
    return *cgroup2_root_;
  }

  // --- before_load only
  // Sets a global variable (`const volatile` in .rodata, or .data/.bss) by
  // name; the size must match the variable's BTF size exactly.
  void set_global(std::string_view var, const void* data, std::size_t size) {
    detail::ErrorText e;
    detail::check(ctx_->ops->set_global(ctx_, std::string(var).c_str(), data, size, &e), e,
                  "set_global");
  }
  template <class T>
  void set_global(std::string_view var, const T& value) {
    set_global(var, &value, sizeof(T));
  }
  void set_max_entries(std::string_view map, std::uint32_t n) {
    detail::ErrorText e;
    detail::check(ctx_->ops->set_max_entries(ctx_, std::string(map).c_str(), n, &e), e,
                  "set_max_entries");
  }
  // Programs not loaded are neither attached nor pinned.
  void set_autoload(std::string_view prog, bool load) {
    detail::ErrorText e;
    detail::check(ctx_->ops->set_autoload(ctx_, std::string(prog).c_str(), load, &e), e,
                  "set_autoload");
  }

  // --- after_load, attach, after_attach (and map_fd above)
  int prog_fd(std::string_view prog) const {
    detail::ErrorText e;
    int fd = -1;
    detail::check(ctx_->ops->prog_fd(ctx_, std::string(prog).c_str(), &fd, &e), e,
                  "prog_fd");
    return fd;
  }

  // --- attach only. Every attachment made here becomes a pinned link under
  // links/ (or a recorded attachment), is undone on rollback and by unpin.
  // Cgroup attachments use multi-attach semantics and never replace a
  // program someone else attached.
  void attach_cgroup(std::string_view prog, const std::string& cgroup_path) {
    detail::ErrorText e;
    detail::check(ctx_->ops->attach_cgroup(ctx_, std::string(prog).c_str(),
                                           cgroup_path.c_str(), &e),
                  e, "attach_cgroup");
  }
  // sk_msg / sk_skb verdicts and parsers on a sockmap or sockhash of this
  // instance (or one shared with it through the manifest). Refuses when
  // another program already holds that slot.
  void attach_map(std::string_view prog, std::string_view map,
                  bpf_attach_type attach_type) {
    detail::ErrorText e;
    detail::check(ctx_->ops->attach_map(ctx_, std::string(prog).c_str(),
                                        std::string(map).c_str(),
                                        static_cast<std::uint32_t>(attach_type), &e),
                  e, "attach_map");
  }
  // libbpf's attach by SEC() name (tracepoint/..., raw_tp/..., ...). When
  // `optional`, a failure is logged, reported as a dead hook in status and
  // the load goes on; returns whether the program is attached.
  bool attach_auto(std::string_view prog, bool optional) {
    detail::ErrorText e;
    int attached = 0;
    detail::check(ctx_->ops->attach_auto(ctx_, std::string(prog).c_str(), optional,
                                         &attached, &e),
                  e, "attach_auto");
    return attached != 0;
  }

 private:
  mutable std::optional<std::string> cgroup2_root_;
};

// What status / before_unpin / event formatting see: the pinned maps of an
// instance loaded earlier (by any process).
class PinnedContext : public ContextBase {
 public:
  PinnedContext(bpfmgr_context* ctx, const Options& options) : ContextBase(ctx, options) {}
};

// ------------------------------------------------------------------ events

enum class EventFormat { Table = BPFMGR_EVENT_TABLE, Json = BPFMGR_EVENT_JSON };

class EventFormatter {
 public:
  virtual ~EventFormatter() = default;
  // Column titles printed once before table rows.
  virtual std::string table_header() const = 0;
  // One ring-buffer record to one line (no trailing newline); an empty
  // string skips the record.
  virtual std::string format(std::span<const std::byte> record,
                             EventFormat format) = 0;
};

// ------------------------------------------------------------------ plugin

struct PluginInfo {
  std::string name;     // what manifests put in `plugin = "..."`
  std::string version;  // the plugin's own version, semver
  std::string description;
};

class Plugin {
 public:
  virtual ~Plugin() = default;

  virtual PluginInfo info() const = 0;
  // The embedded BPF ELF object, e.g. from NAME_bpf__elf_bytes().
  virtual std::span<const std::byte> bpf_object() const = 0;

  virtual std::vector<OptionSpec> option_schema() const { return {}; }
  // Checks beyond the schema (cross-option rules, parsable CIDRs, ...).
  virtual std::vector<OptionProblem> validate(const Options&) const {
    return {};
  }
  // What an instance with these options needs from the running kernel, and
  // where it runs a simpler form (API 2.2). Must decide as before_load does.
  virtual void kernel_requirements(const Options&, KernelNeeds&) const {}

  // Lifecycle, in the order the core calls them. attach() runs first for
  // every instance; programs it did not attach are then attached by the core
  // through libbpf's SEC() conventions, and a program left with no attach
  // point fails the load.
  virtual void before_load(InstanceContext&) {}
  virtual void after_load(InstanceContext&) {}
  virtual void attach(InstanceContext&) {}
  virtual void after_attach(InstanceContext&) {}
  virtual StatusReport status(PinnedContext&) const { return {}; }
  virtual void before_unpin(PinnedContext&) {}

  // Plugins that stream ring-buffer records name the pinned map here.
  virtual std::optional<std::string> events_map() const {
    return std::nullopt;
  }
  virtual std::unique_ptr<EventFormatter> event_formatter(
      const Options&) const {
    return nullptr;
  }
};

// ------------------------------------------------- the C table for a class
namespace detail {

// Runs `f`; whatever it throws becomes an error code and message.
template <class F>
int guarded(bpfmgr_error* err, F&& f) noexcept {
  try {
    f();
    return BPFMGR_OK;
  } catch (const std::exception& e) {
    set_error(err, e.what());
    return BPFMGR_ERR_FAILED;
  } catch (...) {
    set_error(err, "threw an exception that is not a std::exception");
    return BPFMGR_ERR_EXCEPTION;
  }
}

// Writes `s` as a NUL-terminated line into a caller's buffer.
inline int copy_out(const std::string& s, char* buf, std::size_t cap, std::size_t* len) {
  *len = s.size();
  if (s.size() + 1 > cap) return BPFMGR_ERR_NO_SPACE;
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  return BPFMGR_OK;
}

template <class P>
struct Instance {
  P plugin;
  Options options;
  std::unique_ptr<EventFormatter> formatter;
  bool formatter_made = false;
  EventFormatter* events() {
    if (!formatter_made) {
      formatter = plugin.event_formatter(options);
      formatter_made = true;
    }
    if (!formatter) throw Error("the plugin has no event formatter");
    return formatter.get();
  }
};

template <class P>
struct Table {
  // The object that answers the questions asked without an instance.
  static P& descriptor() {
    static P p;
    return p;
  }
  static Instance<P>* self(bpfmgr_instance* i) { return reinterpret_cast<Instance<P>*>(i); }

  static int get_info(bpfmgr_plugin_info* out, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      static const PluginInfo info = descriptor().info();
      *out = {info.name.c_str(), info.version.c_str(), info.description.c_str()};
    });
  }
  static int get_bpf_object(const void** data, std::size_t* size, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      auto bytes = descriptor().bpf_object();
      *data = bytes.data();
      *size = bytes.size();
    });
  }
  static bpfmgr_instance* create(bpfmgr_context* ctx, bpfmgr_error* err) noexcept {
    Instance<P>* made = nullptr;
    guarded(err, [&] {
      auto inst = std::make_unique<Instance<P>>();
      inst->options = options_from_c(ctx->ops->options(ctx));
      made = inst.release();
    });
    return reinterpret_cast<bpfmgr_instance*>(made);
  }
  static void destroy(bpfmgr_instance* i) noexcept {
    try {
      delete self(i);
    } catch (...) {
    }
  }

  struct Schema {
    std::vector<OptionSpec> specs;
    CValues values;
    std::vector<bpfmgr_option_spec> c;
  };
  static int option_schema(const bpfmgr_option_spec** specs, std::size_t* count,
                           bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      static const Schema* schema = [] {
        auto s = std::make_unique<Schema>();
        s->specs = descriptor().option_schema();
        for (auto& o : s->specs) {
          bpfmgr_option_spec c{};
          c.name = o.name.c_str();
          c.type = static_cast<std::uint32_t>(o.type);
          c.description = o.description.c_str();
          if (o.default_value) {
            c.has_default = 1;
            c.default_value = s->values.view(*o.default_value);
          }
          c.has_min = o.min.has_value();
          c.min = o.min.value_or(0);
          c.has_max = o.max.has_value();
          c.max = o.max.value_or(0);
          c.choices = s->values.strings(o.choices);
          c.n_choices = o.choices.size();
          s->c.push_back(c);
        }
        return s.release();
      }();
      *specs = schema->c.data();
      *count = schema->c.size();
    });
  }
  static int validate(const bpfmgr_options* options, bpfmgr_problems* problems,
                      bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      for (auto& p : descriptor().validate(options_from_c(options)))
        problems->add(problems, p.key.c_str(), p.message.c_str(),
                      p.hint.empty() ? nullptr : p.hint.c_str());
    });
  }

  static int kernel_requirements(const bpfmgr_options* options, bpfmgr_kernel* kernel,
                                 bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      KernelNeeds needs(kernel);
      descriptor().kernel_requirements(options_from_c(options), needs);
    });
  }

  static int before_load(bpfmgr_instance* i, bpfmgr_context* c, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      InstanceContext ctx(c, self(i)->options);
      self(i)->plugin.before_load(ctx);
    });
  }
  static int after_load(bpfmgr_instance* i, bpfmgr_context* c, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      InstanceContext ctx(c, self(i)->options);
      self(i)->plugin.after_load(ctx);
    });
  }
  static int attach(bpfmgr_instance* i, bpfmgr_context* c, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      InstanceContext ctx(c, self(i)->options);
      self(i)->plugin.attach(ctx);
    });
  }
  static int after_attach(bpfmgr_instance* i, bpfmgr_context* c, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      InstanceContext ctx(c, self(i)->options);
      self(i)->plugin.after_attach(ctx);
    });
  }
  static int status(bpfmgr_instance* i, bpfmgr_context* c, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      PinnedContext ctx(c, self(i)->options);
      StatusReport report = self(i)->plugin.status(ctx);
      for (auto& counter : report.counters) {
        ErrorText e;
        check(c->ops->add_counter(c, counter.name.c_str(), counter.value,
                                  counter.per_cpu.data(), counter.per_cpu.size(), &e),
              e, "add_counter");
      }
      for (auto& [key, value] : report.details) {
        ErrorText e;
        check(c->ops->add_detail(c, key.c_str(), value.c_str(), &e), e, "add_detail");
      }
      if (!BPFMGR_HAS_FIELD(c->ops, bpfmgr_context_ops, add_metric) || !c->ops->add_metric)
        return;  // an older core: no typed metrics
      for (auto& m : report.metrics) {
        std::vector<bpfmgr_label> labels;
        for (auto& [name, value] : m.labels) labels.push_back({name.c_str(), value.c_str()});
        ErrorText e;
        check(c->ops->add_metric(c, m.name.c_str(), static_cast<std::uint32_t>(m.kind),
                                 m.help.empty() ? nullptr : m.help.c_str(), labels.data(),
                                 labels.size(), m.value, &e),
              e, "add_metric");
      }
    });
  }
  static int before_unpin(bpfmgr_instance* i, bpfmgr_context* c, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      PinnedContext ctx(c, self(i)->options);
      self(i)->plugin.before_unpin(ctx);
    });
  }

  static int events_map(const char** map, bpfmgr_error* err) noexcept {
    return guarded(err, [&] {
      static const std::optional<std::string> name = descriptor().events_map();
      *map = name ? name->c_str() : nullptr;
    });
  }
  static int event_header(bpfmgr_instance* i, char* buf, std::size_t cap,
                          std::size_t* len) noexcept {
    int rc = BPFMGR_OK;
    int thrown = guarded(nullptr, [&] {
      rc = copy_out(self(i)->events()->table_header(), buf, cap, len);
    });
    return thrown ? thrown : rc;
  }
  static int format_event(bpfmgr_instance* i, const void* record, std::size_t size,
                          std::uint32_t format, char* buf, std::size_t cap,
                          std::size_t* len) noexcept {
    int rc = BPFMGR_OK;
    int thrown = guarded(nullptr, [&] {
      auto line = self(i)->events()->format(
          std::span<const std::byte>(static_cast<const std::byte*>(record), size),
          static_cast<EventFormat>(format));
      rc = copy_out(line, buf, cap, len);
    });
    return thrown ? thrown : rc;
  }

  static const bpfmgr_plugin_api* entry(const bpfmgr_host* h) noexcept {
    host() = h;
    static const bpfmgr_plugin_api table = [] {
      bpfmgr_plugin_api t{};
      t.size = sizeof(t);
      t.api_major = BPFMGR_PLUGIN_API_MAJOR;
      t.api_minor = BPFMGR_PLUGIN_API_MINOR;
      t.api_patch = BPFMGR_PLUGIN_API_PATCH;
      t.get_info = &get_info;
      t.get_bpf_object = &get_bpf_object;
      t.create = &create;
      t.destroy = &destroy;
      t.option_schema = &option_schema;
      t.validate = &validate;
      t.before_load = &before_load;
      t.after_load = &after_load;
      t.attach = &attach;
      t.after_attach = &after_attach;
      t.status = &status;
      // Only a plugin that has the hook offers it: unpin then removes the
      // instances of the others without loading their code at all.
      if constexpr (!std::is_same_v<decltype(&P::before_unpin),
                                    void (Plugin::*)(PinnedContext&)>)
        t.before_unpin = &before_unpin;
      t.events_map = &events_map;
      t.event_header = &event_header;
      t.format_event = &format_event;
      t.kernel_requirements = &kernel_requirements;
      return t;
    }();
    return &table;
  }
};

}  // namespace detail
}  // namespace bpfmgr

// Exactly one translation unit of a plugin says BPFMGR_PLUGIN(MyPlugin):
// it defines the entry point, the only symbol the library exports.
#define BPFMGR_PLUGIN(PluginClass)                                          \
  extern "C" BPFMGR_PLUGIN_EXPORT const bpfmgr_plugin_api* bpfmgr_plugin_entry( \
      const bpfmgr_host* host) {                                            \
    return ::bpfmgr::detail::Table<PluginClass>::entry(host);               \
  }
