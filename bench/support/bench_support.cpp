#include "bench_support.hpp"

#include <bpf/bpf.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

namespace bpfmgr::bench {

LoadedManifest::LoadedManifest(const std::string& manifest_toml) {
  auto path = test::write_temp_file("pin_root = \"" + root_.path() + "\"\n" + manifest_toml);
  auto r = test::run_bpfmgr({"load", path});
  if (r.exit_code != 0)
    throw std::runtime_error("bpfmgr load failed (exit " + std::to_string(r.exit_code) +
                             "): " + r.err + r.out);
}

BpfStats::BpfStats() : fd_(bpf_enable_stats(BPF_STATS_RUN_TIME)) {}
BpfStats::~BpfStats() {
  if (fd_ >= 0) ::close(fd_);
}

ProgRunTime prog_run_time(const std::string& pin_path) {
  ProgRunTime t;
  int fd = bpf_obj_get(pin_path.c_str());
  if (fd < 0) return t;
  bpf_prog_info info{};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
    t.run_cnt = info.run_cnt;
    t.run_time_ns = info.run_time_ns;
  }
  ::close(fd);
  return t;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * double(v.size() - 1))];
}

double paired_ratio(const std::vector<double>& value, const std::vector<double>& base) {
  std::vector<double> r;
  for (std::size_t i = 0; i < value.size() && i < base.size(); ++i)
    if (base[i] > 0) r.push_back(value[i] / base[i]);
  return median(r);
}

void pin_to_cpu(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

}  // namespace bpfmgr::bench
