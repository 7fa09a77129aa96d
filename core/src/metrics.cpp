#include "metrics.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <fstream>
#include <set>
#include <sstream>

#include "handles.hpp"
#include "pinned.hpp"

namespace bpfmgr {

namespace {

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

const char* type_name(MetricsText::Type t) {
  switch (t) {
    case MetricsText::Type::Counter: return "counter";
    case MetricsText::Type::Gauge: return "gauge";
    case MetricsText::Type::Histogram: return "histogram";
  }
  return "untyped";
}

// "2026-11-29T23:50:03Z" (state records' loaded_at) as Unix seconds.
double parse_utc(const std::string& s) {
  std::tm tm{};
  if (!strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm)) return 0;
  return static_cast<double>(timegm(&tm));
}

// Entries of a hash-like map, counted by walking its keys: one syscall per
// entry (about 0.3 us), so maps up to this size (a 65536-entry map costs
// ~20 ms a scrape) are counted on every scrape. The kernel keeps no count
// the syscall interface exposes for the others (docs/operations.md lists
// what is and is not reported): arrays are always full, ring buffers and
// socket/inode/task storage have no entry count.
constexpr std::uint32_t kMaxCountedEntries = 1u << 18;

bool hash_like(std::uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_HASH:
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_LRU_HASH:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_SOCKHASH:
    case BPF_MAP_TYPE_LPM_TRIE:
    case BPF_MAP_TYPE_HASH_OF_MAPS:
      return true;
    default:
      return false;
  }
}

std::optional<std::uint64_t> count_entries(int fd, const bpf_map_info& info) {
  if (!hash_like(info.type) || info.max_entries > kMaxCountedEntries)
    return std::nullopt;
  std::vector<unsigned char> key(info.key_size), next(info.key_size);
  std::uint64_t n = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    ++n;
    key.swap(next);
    prev = key.data();
    if (n > info.max_entries) break;  // entries replaced while walking
  }
  return n;
}

// Plugin API 2.2, from an instance's `status --json` object: the simpler
// forms it runs on this kernel (bpfmgr_instance_degraded) and its plugin's
// typed samples (bpfmgr_plugin_<plugin>_<name>[_total], labels
// instance_name + the plugin's). A family keeps the kind and label names of
// its first sample, across instances; a sample that disagrees, or takes a
// name the plugin's counters already use, is dropped (and logged).
struct PluginFamilies {
  std::map<std::string, std::pair<MetricsText::Type, std::set<std::string>>> seen;
};

void add_plugin_samples(MetricsText& m, PluginFamilies& families, const nlohmann::json& s) {
  using T = MetricsText::Type;
  const std::string name = s["instance"].get<std::string>();
  const std::string plugin = s.value("plugin", "");
  m.family("bpfmgr_instance_degraded", T::Gauge,
           "1 per simpler form the instance runs because this kernel lacks a feature "
           "(`bpfmgr status` says why)");
  for (auto& d : s.value("degraded", nlohmann::json::array()))
    m.sample("bpfmgr_instance_degraded",
             {{"instance_name", name}, {"plugin", plugin}, {"what", d.value("what", "")}}, 1);

  auto prefix = "bpfmgr_plugin_" + metric_name_part(plugin) + "_";
  std::set<std::string> counter_families;
  for (auto& c : s.value("counters", nlohmann::json::array()))
    counter_families.insert(prefix + metric_name_part(c["name"].get<std::string>()) +
                            (c.contains("per_cpu") ? "_total" : ""));
  for (auto& mt : s.value("metrics", nlohmann::json::array())) {
    bool counter = mt["kind"] == "counter";
    auto type = counter ? T::Counter : T::Gauge;
    auto family = prefix + mt["name"].get<std::string>() + (counter ? "_total" : "");
    Labels labels{{"instance_name", name}};
    std::set<std::string> label_names;
    for (auto& [k, v] : mt["labels"].items()) {
      labels.emplace_back(k, v.get<std::string>());
      label_names.insert(k);
    }
    auto [it, first] = families.seen.emplace(family, std::make_pair(type, label_names));
    if (counter_families.count(family) ||
        (!first && (it->second.first != type || it->second.second != label_names))) {
      spdlog::warn("metrics: instance '{}': {} disagrees with another sample of that name; "
                   "dropped", name, family);
      continue;
    }
    auto help = mt.value("help", "");
    m.family(family, type,
             help.empty() ? "Plugin " + plugin + "'s " + mt["name"].get<std::string>() : help);
    m.sample(family, labels, mt["value"].is_number() ? mt["value"].get<double>() : NAN);
  }
}

}  // namespace

std::string format_value(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  // Shortest round trip, as std::to_chars writes it; fmt's, because
  // libstdc++'s floating to_chars makes the executable need libm.so, one
  // more library for every command to map.
  return fmt::format("{}", v);
}

void process_metrics(MetricsText& m) {
  using T = MetricsText::Type;
  const double tick = double(::sysconf(_SC_CLK_TCK));
  // /proc/self/stat: fields after the command's closing parenthesis.
  std::ifstream stat_in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_in)), {});
  auto close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream f(stat.substr(close + 2));
    std::vector<std::string> v{"", ""};  // fields 1-2: v[i] is field i + 1
    for (std::string x; f >> x;) v.push_back(x);
    if (v.size() > 23) {
      double utime = std::stod(v[13]), stime = std::stod(v[14]);
      double start_ticks = std::stod(v[21]);
      m.family("process_cpu_seconds_total", T::Counter,
               "Total user and system CPU time spent in seconds.");
      m.sample("process_cpu_seconds_total", {}, (utime + stime) / tick);
      m.family("process_virtual_memory_bytes", T::Gauge, "Virtual memory size in bytes.");
      m.sample("process_virtual_memory_bytes", {}, std::stod(v[22]));
      m.family("process_resident_memory_bytes", T::Gauge, "Resident memory size in bytes.");
      m.sample("process_resident_memory_bytes", {},
               std::stod(v[23]) * double(::sysconf(_SC_PAGESIZE)));
      std::ifstream st("/proc/stat");
      for (std::string key; st >> key;) {
        if (key == "btime") {
          double btime = 0;
          st >> btime;
          m.family("process_start_time_seconds", T::Gauge,
                   "Start time of the process since unix epoch in seconds.");
          m.sample("process_start_time_seconds", {}, btime + start_ticks / tick);
          break;
        }
        st.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
      }
    }
  }
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++fds;
  m.family("process_open_fds", T::Gauge, "Number of open file descriptors.");
  m.sample("process_open_fds", {}, fds);
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    m.family("process_max_fds", T::Gauge, "Maximum number of open file descriptors.");
    m.sample("process_max_fds", {},
             rl.rlim_cur == RLIM_INFINITY ? INFINITY : double(rl.rlim_cur));
  }
}

void MetricsText::family(const std::string& name, Type type, const std::string& help) {
  if (index_.count(name)) return;
  index_[name] = families_.size();
  families_.push_back({name, help, type, {}});
}

void MetricsText::sample(const std::string& name, const Labels& labels, double value,
                         const std::string& suffix) {
  auto& f = families_.at(index_.at(name));
  std::string line = name + suffix;
  if (!labels.empty()) {
    line += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i) line += ',';
      line += labels[i].first + "=\"" + escape_label(labels[i].second) + '"';
    }
    line += '}';
  }
  line += ' ' + format_value(value);
  f.lines.push_back(std::move(line));
}

std::string MetricsText::render() const {
  std::string out;
  for (auto& f : families_) {
    if (f.lines.empty()) continue;
    out += "# HELP " + f.name + ' ' + escape_help(f.help) + '\n';
    out += "# TYPE " + f.name + ' ' + type_name(f.type) + '\n';
    for (auto& l : f.lines) out += l + '\n';
  }
  return out;
}

void Histogram::observe(double v) {
  for (std::size_t i = 0; i < bounds.size(); ++i)
    if (v <= bounds[i]) ++counts[i];
  ++count;
  sum += v;
}

const std::vector<std::string>& repair_reasons() {
  static const std::vector<std::string> reasons = {
      "instance_missing",  // directory or state record gone (reboot, rm -r)
      "link_pin_missing",  // a link pin removed: its hook detached
      "cgroup_removed",    // the cgroup under a cgroup link was deleted
      "link_detached",     // `bpftool link detach`, a sockmap link's map gone
      "link_replaced",     // the link runs another program than the pinned one
      "attachment_missing",  // a non-link attachment (old kernels' sockmap)
      "prog_pin_missing", "map_pin_missing",
      "staging_left",      // a load crashed half-way
  };
  return reasons;
}

bool bpf_stats_enabled() {
  std::ifstream in("/proc/sys/kernel/bpf_stats_enabled");
  int v = 0;
  return (in >> v) && v != 0;
}

std::string metric_name_part(const std::string& s) {
  std::string out;
  for (char c : s)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
  return out;
}

namespace {

// Repairs and failing instances, by instance (and reason).
void repair_metrics(MetricsText& m, const ServeStats& stats) {
  using T = MetricsText::Type;
  m.family("bpfmgr_repairs_total", T::Counter,
           "Instances reloaded because what runs drifted from the manifest, by "
           "instance and reason");
  m.family("bpfmgr_repair_failures_total", T::Counter,
           "Drift a load did not repair, by instance and reason (retried)");
  m.family("bpfmgr_instance_apply_failures_total", T::Counter,
           "Passes in which the instance could not be applied (its cgroup missing, "
           "the verifier or the kernel refusing it); the others were applied");
  m.family("bpfmgr_instance_failing", T::Gauge,
           "1 when the managed instance is not up: it cannot be applied, or it "
           "drifted and the repair failed (/readyz lists why)");
  // Zero for every managed instance and reason, so rate() and increase()
  // see the first one; instances that went away keep their counts.
  auto repairs = stats.repairs, failures = stats.repair_failures;
  auto applies = stats.instance_apply_failures;
  for (auto& inst : stats.managed_instances) {
    for (auto& r : repair_reasons()) {
      repairs.try_emplace({inst, r}, 0);
      failures.try_emplace({inst, r}, 0);
    }
    applies.try_emplace(inst, 0);
  }
  for (auto& [k, n] : repairs)
    m.sample("bpfmgr_repairs_total", {{"instance_name", k.first}, {"reason", k.second}},
             double(n));
  for (auto& [k, n] : failures)
    m.sample("bpfmgr_repair_failures_total",
             {{"instance_name", k.first}, {"reason", k.second}}, double(n));
  for (auto& [inst, n] : applies)
    m.sample("bpfmgr_instance_apply_failures_total", {{"instance_name", inst}}, double(n));
  std::set<std::string> failing(stats.failing_instances.begin(),
                                stats.failing_instances.end());
  for (auto& inst : stats.managed_instances)
    m.sample("bpfmgr_instance_failing", {{"instance_name", inst}},
             failing.count(inst) ? 1 : 0);
}

// The manager's own work: reconciles, applies, the manifest.
void manager_metrics(MetricsText& m, const ServeStats& stats) {
  using T = MetricsText::Type;
  m.family("bpfmgr_build_info", T::Gauge, "bpfmgr's version; always 1");
  m.sample("bpfmgr_build_info", {{"version", BPFMGR_VERSION}}, 1);
  m.family("bpfmgr_reconciles_total", T::Counter,
           "Reconcile passes (manifest, pins and kernel compared), by what started them");
  for (auto t : {"start", "file", "signal", "interval", "drift"}) {
    auto it = stats.reconciles.find(t);
    m.sample("bpfmgr_reconciles_total", {{"trigger", t}},
             it == stats.reconciles.end() ? 0 : double(it->second));
  }
  repair_metrics(m, stats);
  m.family("bpfmgr_ready", T::Gauge,
           "1 when /readyz answers 200: the manifest is applied and every managed "
           "instance is up");
  m.sample("bpfmgr_ready", {}, stats.ready ? 1 : 0);
  m.family("bpfmgr_applies_total", T::Counter,
           "Transactional loads of the manifest, by result");
  for (auto r : {"ok", "failed"}) {
    auto it = stats.applies.find(r);
    m.sample("bpfmgr_applies_total", {{"result", r}},
             it == stats.applies.end() ? 0 : double(it->second));
  }
  m.family("bpfmgr_manifest_errors_total", T::Counter,
           "Times the manifest was read and found invalid (the running state was kept)");
  m.sample("bpfmgr_manifest_errors_total", {}, double(stats.manifest_errors));
  m.family("bpfmgr_manifest_valid", T::Gauge,
           "1 when the manifest on disk is valid, 0 when the last read found errors");
  m.sample("bpfmgr_manifest_valid", {}, stats.manifest_valid ? 1 : 0);
  m.family("bpfmgr_last_apply_timestamp_seconds", T::Gauge,
           "When the manifest was last applied (Unix time)");
  m.sample("bpfmgr_last_apply_timestamp_seconds", {}, stats.last_apply_timestamp);
  m.family("bpfmgr_last_apply_success", T::Gauge,
           "1 when the last apply committed, 0 when it failed and was rolled back");
  m.sample("bpfmgr_last_apply_success", {}, stats.last_apply_ok ? 1 : 0);
  m.family("bpfmgr_last_reconcile_timestamp_seconds", T::Gauge,
           "When drift was last checked (Unix time)");
  m.sample("bpfmgr_last_reconcile_timestamp_seconds", {}, stats.last_reconcile_timestamp);
  m.family("bpfmgr_apply_duration_seconds", T::Histogram,
           "Time taken by each apply (stage, attach, commit)");
  for (std::size_t i = 0; i < stats.apply_duration.bounds.size(); ++i)
    m.sample("bpfmgr_apply_duration_seconds",
             {{"le", format_value(stats.apply_duration.bounds[i])}},
             double(stats.apply_duration.counts[i]), "_bucket");
  m.sample("bpfmgr_apply_duration_seconds", {{"le", "+Inf"}},
           double(stats.apply_duration.count), "_bucket");
  m.sample("bpfmgr_apply_duration_seconds", {}, stats.apply_duration.sum, "_sum");
  m.sample("bpfmgr_apply_duration_seconds", {}, double(stats.apply_duration.count),
           "_count");
}

// The families of every instance's samples, declared once.
void instance_families(MetricsText& m) {
  using T = MetricsText::Type;
  m.family("bpfmgr_instance_info", T::Gauge,
           "A loaded instance: its plugin, plugin version and manifest; always 1");
  m.family("bpfmgr_instance_up", T::Gauge,
           "1 when the instance is loaded and every hook it attached is live");
  m.family("bpfmgr_instance_hooks", T::Gauge, "Hooks of the instance, by state");
  m.family("bpfmgr_instance_loaded_timestamp_seconds", T::Gauge,
           "When the instance's running programs were loaded (Unix time)");
  m.family("bpfmgr_program_info", T::Gauge,
           "A pinned program and its kernel program type; always 1");
  m.family("bpfmgr_program_runs_total", T::Counter,
           "Times the program ran (bpf_prog_info.run_cnt; accrues only while "
           "bpf stats are enabled)");
  m.family("bpfmgr_program_run_seconds_total", T::Counter,
           "Time spent running the program (bpf_prog_info.run_time_ns; accrues "
           "only while bpf stats are enabled)");
  m.family("bpfmgr_map_max_entries", T::Gauge,
           "A pinned map's max_entries (maps with a bound; ring buffers are in "
           "bpfmgr_ringbuf_size_bytes)");
  m.family("bpfmgr_ringbuf_size_bytes", T::Gauge, "A pinned ring buffer's size");
  m.family("bpfmgr_map_entries", T::Gauge,
           "Entries in a hash-type map (hash, LRU hash, per-CPU hash, sockhash, LPM "
           "trie, hash of maps) of at most 262144 max_entries, counted on each "
           "scrape; arrays are always full and not listed");
  m.family("bpfmgr_plugin_status_errors", T::Gauge,
           "1 when the plugin could not report the instance's counters");
}

// One instance as `bpfmgr status --json` observed it: up, hooks, programs,
// maps, the plugin's counters and samples.
void instance_metrics(MetricsText& m, const nlohmann::json& s, bool run_stats,
                      PluginFamilies& plugin_families) {
  using T = MetricsText::Type;
  const std::string name = s["instance"].get<std::string>();
  Labels inst{{"instance_name", name}};
  if (s.contains("error")) {
    m.sample("bpfmgr_instance_up", inst, 0);
    return;
  }
  const std::string plugin = s.value("plugin", "");
  m.sample("bpfmgr_instance_info",
           {{"instance_name", name}, {"plugin", plugin},
            {"version", s.value("plugin_version", "")},
            {"manifest", s.value("manifest", "")}},
           1);
  int live = 0, missing = 0;
  for (auto& h : s["hooks"]) (h["live"].get<bool>() ? live : missing)++;
  // A hook the plugin marked optional and the kernel lacks is missing
  // from the start; "up" asks whether what was attached still runs.
  bool up = !s.contains("drift");
  for (auto& l : s["links"])
    if (l.contains("error")) up = false;
  for (auto& p : s["programs"])
    if (p.contains("error")) up = false;
  for (auto& mp : s["maps"])
    if (mp.contains("error")) up = false;
  m.sample("bpfmgr_instance_up", inst, up ? 1 : 0);
  m.sample("bpfmgr_instance_hooks", {{"instance_name", name}, {"state", "live"}}, live);
  m.sample("bpfmgr_instance_hooks", {{"instance_name", name}, {"state", "missing"}},
           missing);
  m.sample("bpfmgr_instance_loaded_timestamp_seconds", inst,
           parse_utc(s.value("loaded_at", "")));

  for (auto& p : s["programs"]) {
    if (!p.contains("id")) continue;
    Labels pl{{"instance_name", name}, {"program", p["name"].get<std::string>()}};
    auto with_type = pl;
    with_type.push_back({"type", p.value("type", "?")});
    m.sample("bpfmgr_program_info", with_type, 1);
    if (run_stats && p.contains("run_cnt")) {
      m.sample("bpfmgr_program_runs_total", pl, double(p["run_cnt"].get<std::uint64_t>()));
      m.sample("bpfmgr_program_run_seconds_total", pl,
               double(p["run_time_ns"].get<std::uint64_t>()) / 1e9);
    }
  }
  for (auto& mp : s["maps"]) {
    // Shared maps are reported once, by the instance that owns them.
    if (mp.contains("shared_from") || !mp.contains("id")) continue;
    Labels ml{{"instance_name", name}, {"map", mp["name"].get<std::string>()}};
    Fd fd(bpf_obj_get(mp["pin"].get<std::string>().c_str()));
    bpf_map_info info{};
    std::uint32_t len = sizeof(info);
    if (!fd || bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) continue;
    if (info.type == BPF_MAP_TYPE_RINGBUF || info.type == BPF_MAP_TYPE_USER_RINGBUF) {
      // max_entries of a ring buffer is its size in bytes.
      m.sample("bpfmgr_ringbuf_size_bytes", ml, double(info.max_entries));
      continue;
    }
    // Socket, inode, task and cgroup storage have no bound (one value per
    // object; max_entries reads 0): nothing to report a fill against.
    if (info.max_entries == 0) continue;
    m.sample("bpfmgr_map_max_entries", ml, double(info.max_entries));
    if (auto n = count_entries(fd.get(), info))
      m.sample("bpfmgr_map_entries", ml, double(*n));
  }

  // Plugin counters: a per-CPU counter only grows (a Prometheus counter);
  // a plain value (entries now, flows open) is a gauge.
  m.sample("bpfmgr_plugin_status_errors", inst, s.contains("status_error") ? 1 : 0);
  auto prefix = "bpfmgr_plugin_" + metric_name_part(plugin) + "_";
  for (auto& c : s["counters"]) {
    auto cname = metric_name_part(c["name"].get<std::string>());
    bool monotonic = c.contains("per_cpu");
    auto family = prefix + cname + (monotonic ? "_total" : "");
    m.family(family, monotonic ? T::Counter : T::Gauge,
             "Plugin " + plugin + "'s " + (monotonic ? "counter " : "value ") +
                 c["name"].get<std::string>() + " (as in `bpfmgr status`)");
    m.sample(family, inst, double(c["value"].get<std::uint64_t>()));
  }
  add_plugin_samples(m, plugin_families, s);
}

}  // namespace

std::string render_metrics(const std::string& pin_root, const ServeStats& stats,
                           PluginRegistry& registry) {
  using T = MetricsText::Type;
  MetricsText m;
  manager_metrics(m, stats);
  bool run_stats = stats.bpf_stats_held || bpf_stats_enabled();
  m.family("bpfmgr_bpf_stats_enabled", T::Gauge,
           "1 when BPF run-time stats are on (kernel.bpf_stats_enabled, or "
           "--enable-bpf-stats); per-program run counters are exported only then");
  m.sample("bpfmgr_bpf_stats_enabled", {}, run_stats ? 1 : 0);

  process_metrics(m);

  // Instances: every one under the pin root, and managed ones missing.
  instance_families(m);
  // The same observation `bpfmgr status --json` prints.
  auto observed = pin_root_status(pin_root, {}, registry);
  std::set<std::string> present;
  for (auto& s : observed["instances"]) present.insert(s["instance"].get<std::string>());
  for (auto& want : stats.managed_instances)
    if (!present.count(want)) m.sample("bpfmgr_instance_up", {{"instance_name", want}}, 0);
  PluginFamilies plugin_families;
  for (auto& s : observed["instances"]) instance_metrics(m, s, run_stats, plugin_families);
  return m.render();
}

}  // namespace bpfmgr
