// A Google Benchmark console reporter that also keeps each benchmark's
// times, so a harness can print ratios of benchmarks measured in the same
// run: of medians (print_ratios) or paired by repetition (print_paired,
// best with --benchmark_enable_random_interleaving=true so the repetitions
// of the two alternate). Part of bpfmgr::bench; needs Google Benchmark
// (bpfmgr_add_bench links it).
#pragma once

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ostream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <bpfmgr/bench/measure.hpp>

namespace bpfmgr::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // Colours only on a terminal (a log file gets plain columns).
  RatioReporter() : ConsoleReporter(::isatty(1) ? OO_Defaults : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (auto& r : runs) {
      if (r.error_occurred) continue;
      if (r.run_type == Run::RT_Iteration) {
        reps_[r.run_name.function_name].push_back(r.GetAdjustedRealTime());
        times_[r.benchmark_name()] = r.GetAdjustedRealTime();
      } else if (r.aggregate_name == "median") {
        times_[r.benchmark_name()] = r.GetAdjustedRealTime();
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  // Real time per iteration of the first benchmark whose name starts with
  // `prefix` (with repetitions: the median), or 0.
  double time(const std::string& prefix) const {
    for (auto& [name, t] : times_)
      if (name.rfind(prefix, 0) == 0) return t;
    return 0;
  }
  // Real time per iteration of every repetition of benchmark function
  // `function` (its name as registered, without arguments), in run order.
  std::vector<double> repetitions(const std::string& function) const {
    auto it = reps_.find(function);
    return it == reps_.end() ? std::vector<double>{} : it->second;
  }
  // Prints "label  a/b" for each (label, a, b): ratios of medians.
  void print_ratios(
      const std::vector<std::tuple<std::string, std::string, std::string>>& rows) const {
    auto& out = GetOutputStream();
    out << "\nratios (same run):\n";
    for (auto& [label, a, b] : rows) {
      double ta = time(a), tb = time(b);
      char line[128];
      if (ta > 0 && tb > 0) {
        std::snprintf(line, sizeof line, "  %-44s %8.3f\n", label.c_str(), ta / tb);
        out << line;
      }
    }
    out.flush();
  }
  // Prints the paired ratio of functions a and b (median over repetitions
  // i of a[i]/b[i]) and returns it; 0 when either did not run.
  double print_paired(const std::string& label, const std::string& a,
                      const std::string& b) const {
    auto ta = repetitions(a), tb = repetitions(b);
    std::size_t pairs = std::min(ta.size(), tb.size());
    auto& out = GetOutputStream();
    if (pairs == 0) {
      out << "\n" << label << ": not measured (needs the repetitions of both " << a << " and "
          << b << ", not only aggregates)" << std::endl;
      return 0;
    }
    double r = paired_ratio(ta, tb);
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%.3f", r);
    out << "\n" << label << ": " << ratio << " (paired ratio, median of " << pairs
        << " repetition pairs)" << std::endl;
    return r;
  }

 private:
  std::map<std::string, double> times_;
  std::map<std::string, std::vector<double>> reps_;
};

}  // namespace bpfmgr::bench
