// Helpers for benchmark harnesses under bench/: load manifests with the real
// `bpfmgr` binary under a private pin root, read the kernel's per-program
// run-time accounting, and compare configurations measured round by round.
// Namespaces, veths and cgroups come from tests/support (two_hosts.hpp,
// ScopedCgroup), so the shipped plugins never create any.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace bpfmgr::bench {

// A manifest (TOML without pin_root) loaded by `bpfmgr load` under a pin
// root of its own; `bpfmgr unpin` runs on destruction. Throws with bpfmgr's
// message when the load fails.
class LoadedManifest {
 public:
  explicit LoadedManifest(const std::string& manifest_toml);
  LoadedManifest(const LoadedManifest&) = delete;
  LoadedManifest& operator=(const LoadedManifest&) = delete;
  const std::string& pin_root() const { return root_.path(); }
  std::string map_pin(const std::string& instance, const std::string& map) const {
    return pin_root() + "/" + instance + "/maps/" + map;
  }
  std::string prog_pin(const std::string& instance, const std::string& prog) const {
    return pin_root() + "/" + instance + "/progs/" + prog;
  }

 private:
  test::PinRoot root_;
};

// kernel.bpf_stats_enabled switched on for the object's lifetime (the
// kernel keeps a count of holders, so concurrent users do not clash); each
// program then accumulates run_cnt and run_time_ns.
class BpfStats {
 public:
  BpfStats();
  ~BpfStats();
  BpfStats(const BpfStats&) = delete;
  BpfStats& operator=(const BpfStats&) = delete;
  bool enabled() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct ProgRunTime {
  std::uint64_t run_cnt = 0;
  std::uint64_t run_time_ns = 0;
  double ns_per_run() const {
    return run_cnt ? double(run_time_ns) / double(run_cnt) : 0.0;
  }
};
// run_cnt / run_time_ns of a pinned program (zeros if it cannot be opened).
ProgRunTime prog_run_time(const std::string& pin_path);

double percentile(std::vector<double> v, double p);
inline double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

// Per-round paired comparison: the median over rounds of value/base of the
// same round, so slow drift of a shared machine cancels out.
double paired_ratio(const std::vector<double>& value, const std::vector<double>& base);

// Pins the calling thread (and children forked later) to one CPU; no-op
// when cpu < 0.
void pin_to_cpu(int cpu);

}  // namespace bpfmgr::bench
