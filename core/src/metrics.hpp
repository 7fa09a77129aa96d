// Prometheus text exposition (format 0.0.4) of what runs under a pin root,
// for `bpfmgr serve`'s /metrics. Instances are observed the way `bpfmgr
// status` observes them (instance_status: the same live checks), so the
// endpoint and the command never disagree; programs add the kernel's own
// run counters from bpf_prog_info when kernel.bpf_stats_enabled is on.
//
// Naming follows Prometheus conventions: every name starts with `bpfmgr_`,
// counters end in `_total`, times are seconds, and labels take values from
// bounded sets (instance, program and map names from manifests, reasons and
// triggers from fixed lists; never kernel ids, which change on every load).
// The instance label is `instance_name`: `instance` and `job` are the labels
// Prometheus itself attaches to every scraped series.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "plugins.hpp"

namespace bpfmgr {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Collects samples grouped by metric family and renders them in the text
// format: one HELP and TYPE line per family, its samples together.
class MetricsText {
 public:
  enum class Type { Counter, Gauge, Histogram };
  // Declares a family (idempotent); later samples of it are grouped under it.
  void family(const std::string& name, Type type, const std::string& help);
  // A sample of family `name` (`suffix` is "_bucket", "_sum", ... for
  // histograms). The family must have been declared.
  void sample(const std::string& name, const Labels& labels, double value,
              const std::string& suffix = "");
  std::string render() const;

 private:
  struct Family {
    std::string name, help;
    Type type;
    std::vector<std::string> lines;
  };
  std::vector<Family> families_;
  std::map<std::string, std::size_t> index_;
};

// A cumulative histogram with fixed bucket bounds (seconds).
struct Histogram {
  std::vector<double> bounds{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  std::vector<std::uint64_t> counts = std::vector<std::uint64_t>(bounds.size(), 0);
  std::uint64_t count = 0;
  double sum = 0;
  void observe(double v);
};

// What the manager itself counts; owned by serve, copied for each scrape.
struct ServeStats {
  std::string manifest_path;
  std::map<std::string, std::uint64_t> reconciles;  // by trigger
  // (instance, reason) -> repairs that worked, and that did not.
  std::map<std::pair<std::string, std::string>, std::uint64_t> repairs, repair_failures;
  // Per instance: passes in which it could not be applied.
  std::map<std::string, std::uint64_t> instance_apply_failures;
  // Managed instances not up now (cannot be applied, or drifted and not
  // repaired): what /readyz lists.
  std::vector<std::string> failing_instances;
  bool ready = false;  // /readyz would answer 200
  std::map<std::string, std::uint64_t> applies;     // by result: ok, failed
  std::uint64_t manifest_errors = 0;
  bool manifest_valid = true;
  double last_apply_timestamp = 0;  // Unix seconds; 0 before the first
  bool last_apply_ok = false;
  double last_reconcile_timestamp = 0;
  Histogram apply_duration;
  std::vector<std::string> managed_instances;  // in the manifest now
  // serve holds a BPF_ENABLE_STATS fd (--enable-bpf-stats): run counters
  // accrue although the sysctl reads 0.
  bool bpf_stats_held = false;
};

// Every drift reason serve counts a repair for: the label values of
// bpfmgr_repairs_total, zero-initialised so rate() works from the start.
// docs/operations.md explains each.
const std::vector<std::string>& repair_reasons();

// Whether kernel.bpf_stats_enabled is on (run counters accrue).
bool bpf_stats_enabled();

// Renders the full /metrics page: per instance under `pin_root` (and per
// managed instance that is missing), per program, per map, and `stats`.
std::string render_metrics(const std::string& pin_root, const ServeStats& stats,
                           PluginRegistry& registry);

// A sample value as Prometheus writes it: the shortest text that reads
// back as the same double ("0.05", not "0.050000000000000003").
std::string format_value(double v);

// process_* metrics of this process (Prometheus' standard set), from /proc.
void process_metrics(MetricsText& m);

// Metric-name-safe form of a word: [a-zA-Z0-9_], anything else becomes '_'.
std::string metric_name_part(const std::string& s);

}  // namespace bpfmgr
