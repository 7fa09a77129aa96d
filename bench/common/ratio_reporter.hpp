// A console reporter that also remembers each benchmark's time, so a harness
// can print side-by-side ratios of benchmarks measured in the same run.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace bpfmgr::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (auto& r : runs)
      if (r.run_type == Run::RT_Iteration || r.aggregate_name == "median")
        times_[r.benchmark_name()] = r.GetAdjustedRealTime();
    ConsoleReporter::ReportRuns(runs);
  }
  // Real time per iteration of the first benchmark whose name starts with
  // `prefix` (aggregates: the median), or 0.
  double time(const std::string& prefix) const {
    for (auto& [name, t] : times_)
      if (name.rfind(prefix, 0) == 0) return t;
    return 0;
  }
  // Prints "label: a/b = ratio" for each (label, a, b).
  void print_ratios(
      const std::vector<std::tuple<std::string, std::string, std::string>>& rows) const {
    std::printf("\nratios (same run):\n");
    for (auto& [label, a, b] : rows) {
      double ta = time(a), tb = time(b);
      if (ta > 0 && tb > 0)
        std::printf("  %-44s %8.3f\n", label.c_str(), ta / tb);
    }
  }

 private:
  std::map<std::string, double> times_;
};

}  // namespace bpfmgr::bench
