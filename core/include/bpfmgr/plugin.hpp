// bpfmgr plugin SDK: the one header a plugin includes.
//
// A plugin is a shared library carrying one BPF object (embedded ELF bytes,
// usually from a libbpf skeleton) plus the hooks below. The core opens and
// loads the object, pins maps/programs/links under
// <pin_root>/<instance>/{maps,progs,links}/ and rolls everything back when any
// step fails. Hooks only fill in what the core cannot do generically.
//
// ABI rules (versioned like falcosecurity's plugin API):
//  - a plugin records the API version it was compiled against
//    (BPFMGR_PLUGIN(...) does this); the core refuses another major, or a
//    minor newer than its own;
//  - hooks added in a later minor are appended at the end of Plugin and the
//    core calls them only for plugins built with that minor or newer;
//  - hooks report failure by throwing (bpfmgr::Error or any std::exception);
//    the core catches at every hook boundary and rolls the load back.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <boost/config.hpp>

#include <cerrno>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace bpfmgr {

struct ApiVersion {
  std::uint32_t major;
  std::uint32_t minor;
  std::uint32_t patch;
};

// Bump major for incompatible changes (vtable reorder, struct layout), minor
// for hooks appended at the end of Plugin.
inline constexpr ApiVersion kPluginApiVersion{1, 0, 0};

class BOOST_SYMBOL_VISIBLE Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- options
// A plugin publishes a schema; the core checks the manifest against it
// (unknown keys, types, ranges, choices, with file:line:column and "did you
// mean") before anything touches the kernel, then fills in defaults.

enum class OptionType { Bool, Int, String, StringList, IntList };

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

struct StatusReport {
  std::vector<Counter> counters;
  // Free-form facts ("hooks live", "cgroup", ...), shown as key: value.
  std::vector<std::pair<std::string, std::string>> details;
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
    throw Error("per-CPU map lookup of key " + std::to_string(key) + " failed: errno " +
                std::to_string(errno));
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

// ------------------------------------------------------------- contexts

// What a lifecycle hook sees of its instance. Implemented by the core, which
// owns every libbpf handle; file descriptors handed out are borrowed and stay
// valid for the duration of the hook.
class BOOST_SYMBOL_VISIBLE InstanceContext {
 public:
  virtual ~InstanceContext() = default;

  virtual const std::string& instance_name() const = 0;
  virtual const Options& options() const = 0;
  // <pin_root>/<instance>
  virtual const std::string& pin_dir() const = 0;
  // Mount point of cgroup v2, found in /proc/self/mounts.
  virtual const std::string& cgroup2_root() const = 0;

  // --- before_load only
  // Sets a global variable (`const volatile` in .rodata, or .data/.bss) by
  // name; the size must match the variable's BTF size exactly.
  virtual void set_global(std::string_view var, const void* data,
                          std::size_t size) = 0;
  template <class T>
  void set_global(std::string_view var, const T& value) {
    set_global(var, &value, sizeof(T));
  }
  virtual void set_max_entries(std::string_view map, std::uint32_t n) = 0;
  // Programs not loaded are neither attached nor pinned.
  virtual void set_autoload(std::string_view prog, bool load) = 0;

  // --- after_load, attach, after_attach
  virtual int map_fd(std::string_view map) const = 0;
  virtual int prog_fd(std::string_view prog) const = 0;

  // --- attach only. Every attachment made here becomes a pinned link under
  // links/ (or a recorded attachment), is undone on rollback and by unpin.
  // Cgroup attachments use multi-attach semantics and never replace a
  // program someone else attached. `attach_type` defaults to the program's
  // expected attach type.
  virtual void attach_cgroup(std::string_view prog,
                             const std::string& cgroup_path) = 0;
  // sk_msg / sk_skb verdicts and parsers on a sockmap or sockhash of this
  // instance (or one shared with it through the manifest). Refuses when
  // another program already holds that slot.
  virtual void attach_map(std::string_view prog, std::string_view map,
                          bpf_attach_type attach_type) = 0;
  // libbpf's attach by SEC() name (tracepoint/..., raw_tp/..., ...). When
  // `optional`, a failure is logged, reported as a dead hook in status and
  // the load goes on; returns whether the program is attached.
  virtual bool attach_auto(std::string_view prog, bool optional) = 0;
};

// What status / before_unpin / events see: pinned maps of a loaded instance.
class BOOST_SYMBOL_VISIBLE PinnedContext {
 public:
  virtual ~PinnedContext() = default;
  virtual const std::string& instance_name() const = 0;
  virtual const Options& options() const = 0;
  virtual const std::string& pin_dir() const = 0;
  // Opens <pin_dir>/maps/<map> (or the map this instance shares from
  // another instance); the fd is owned by the context. Throws if absent.
  virtual int map_fd(std::string_view map) const = 0;
};

// Lets a plugin's benchmark load instances through the real core.
class BOOST_SYMBOL_VISIBLE LoadedInstances {
 public:
  virtual ~LoadedInstances() = default;  // unpins everything it loaded
  virtual const std::string& pin_root() const = 0;
};

class BOOST_SYMBOL_VISIBLE BenchContext {
 public:
  virtual ~BenchContext() = default;
  virtual const std::vector<std::string>& args() const = 0;
  // Loads a manifest given as TOML text (its pin_root is replaced by a
  // private, unique one) and returns a guard that unpins it when destroyed.
  virtual std::unique_ptr<LoadedInstances> load(
      const std::string& manifest_toml) = 0;
  virtual const std::string& cgroup2_root() const = 0;
};

// ------------------------------------------------------------------ events

enum class EventFormat { Table, Json };

class BOOST_SYMBOL_VISIBLE EventFormatter {
 public:
  virtual ~EventFormatter() = default;
  // Column titles printed once before table rows.
  virtual std::string table_header() const = 0;
  // One ring-buffer record to one line (no trailing newline); an empty
  // string skips the record. Must not throw: it runs inside libbpf's
  // ring-buffer callback.
  virtual std::string format(std::span<const std::byte> record,
                             EventFormat format) noexcept = 0;
};

// ------------------------------------------------------------------ plugin

struct PluginInfo {
  std::string name;     // what manifests put in `plugin = "..."`
  std::string version;  // the plugin's own version, semver
  std::string description;
};

class BOOST_SYMBOL_VISIBLE Plugin {
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

  // `bpfmgr bench PLUGIN [args...]`: returns a process exit code.
  virtual int bench(BenchContext&) { return 2; }
  virtual bool has_bench() const { return false; }

  // Plugins that stream ring-buffer records name the pinned map here.
  virtual std::optional<std::string> events_map() const {
    return std::nullopt;
  }
  virtual std::unique_ptr<EventFormatter> event_formatter(
      const Options&) const {
    return nullptr;
  }
};

}  // namespace bpfmgr

// Exactly one translation unit of a plugin says BPFMGR_PLUGIN(MyPlugin).
// The core reads bpfmgr_plugin_api_version before it calls anything else,
// then creates the plugin through bpfmgr_plugin_create.
#define BPFMGR_PLUGIN(PluginClass)                                        \
  extern "C" BOOST_SYMBOL_EXPORT const ::bpfmgr::ApiVersion               \
      bpfmgr_plugin_api_version;                                          \
  extern "C" BOOST_SYMBOL_EXPORT const ::bpfmgr::ApiVersion               \
      bpfmgr_plugin_api_version = ::bpfmgr::kPluginApiVersion;            \
  extern "C" BOOST_SYMBOL_EXPORT ::bpfmgr::Plugin* bpfmgr_plugin_create() { \
    return new PluginClass();                                             \
  }
