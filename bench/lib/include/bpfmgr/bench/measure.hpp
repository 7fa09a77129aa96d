// Loading what is measured and measuring it: a manifest loaded by the real
// `bpfmgr` binary under a private pin root, the kernel's per-program run
// time (bpf_stats), and comparisons of configurations measured round by
// round. Part of bpfmgr::bench (header-only).
#pragma once

#include <bpf/bpf.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <bpfmgr/bench/fixtures.hpp>
#include <bpfmgr/bench/process.hpp>
#include <bpfmgr/pin_paths.hpp>

namespace bpfmgr::bench {

namespace detail {

// The names `bpfmgr load` lists after `label` ("loaded: a, b"); instance
// names hold only letters, digits, '-' and '_'.
inline std::vector<std::string> listed(const std::string& out, const std::string& label) {
  std::vector<std::string> names;
  for (std::size_t at = out.find(label); at != std::string::npos;
       at = out.find(label, at + 1)) {
    if (at != 0 && out[at - 1] != '\n') continue;
    auto end = out.find('\n', at);
    auto line = out.substr(at + label.size(), end == std::string::npos ? end : end - at - label.size());
    for (std::size_t start = 0; start < line.size();) {
      auto comma = line.find(", ", start);
      names.push_back(line.substr(start, comma == std::string::npos ? comma : comma - start));
      start = comma == std::string::npos ? line.size() : comma + 2;
    }
  }
  return names;
}

}  // namespace detail

// A manifest (TOML without pin_root) loaded by `bpfmgr load`, unloaded
// (`bpfmgr unpin`) on destruction. `plugin_path` becomes the manifest's
// plugin_path: directories searched before the installed plugins, e.g. the
// build directory of the plugin being measured (bpfmgr_add_bench(... PLUGIN
// name) defines BPFMGR_BENCH_PLUGIN_DIR). `pin_root` "" loads under a
// scratch pin root of its own (a PinRoot, removed on destruction); a path
// loads there, and only the instances this load created are unpinned on
// destruction (what it updated or found unchanged was there before).
// Throws with bpfmgr's message when the load fails.
class LoadedManifest {
 public:
  explicit LoadedManifest(const std::string& manifest_toml,
                          const std::vector<std::string>& plugin_path = {},
                          const std::string& pin_root = "") {
    if (pin_root.empty()) scratch_.emplace();
    root_ = pin_root.empty() ? scratch_->path() : pin_root;
    std::string text = "pin_root = \"" + root_ + "\"\n";
    if (!plugin_path.empty()) {
      text += "plugin_path = [";
      for (std::size_t i = 0; i < plugin_path.size(); ++i)
        text += (i ? ", \"" : "\"") + plugin_path[i] + "\"";
      text += "]\n";
    }
    text += manifest_toml;
    // The manifest lives only as long as the load: bpfmgr does not read it again.
    char path[] = "/tmp/bpfmgr-bench-XXXXXX.toml";
    int fd = ::mkstemps(path, 5);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "mkstemps");
    bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    CommandResult r;
    if (written) r = run_bpfmgr({"load", path});
    ::unlink(path);
    if (!written) throw std::runtime_error(std::string("cannot write ") + path);
    if (r.exit_code != 0)
      throw std::runtime_error("bpfmgr load failed (exit " + std::to_string(r.exit_code) +
                               "): " + r.err + r.out);
    if (!scratch_) created_ = detail::listed(r.out, "loaded: ");
  }
  ~LoadedManifest() {
    if (scratch_ || created_.empty()) return;  // a scratch root cleans up itself
    std::vector<std::string> argv{"unpin", "--pin-root", root_, "--quiet"};
    argv.insert(argv.end(), created_.begin(), created_.end());
    run_bpfmgr(argv);
  }
  LoadedManifest(const LoadedManifest&) = delete;
  LoadedManifest& operator=(const LoadedManifest&) = delete;

  const std::string& pin_root() const { return root_; }
  // Where an instance's map or program is pinned: the SDK's pin paths
  // (<bpfmgr/pin_paths.hpp>), the rule bpfmgr pins by. A map the instance
  // shares from another instance is pinned by that one: ask for the owner's.
  std::string map_pin(const std::string& instance, const std::string& map) const {
    return pin_paths::pin(pin_paths::instance_dir(root_, instance), PinKind::Map, map);
  }
  std::string prog_pin(const std::string& instance, const std::string& prog) const {
    return pin_paths::pin(pin_paths::instance_dir(root_, instance), PinKind::Prog, prog);
  }
  std::string link_pin(const std::string& instance, const std::string& link) const {
    return pin_paths::pin(pin_paths::instance_dir(root_, instance), PinKind::Link, link);
  }

 private:
  std::optional<PinRoot> scratch_;
  std::string root_;
  std::vector<std::string> created_;  // instances this load created (given pin root)
};

// kernel.bpf_stats_enabled switched on for the object's lifetime (the
// kernel counts holders, so concurrent users do not clash); each program
// then accumulates run_cnt and run_time_ns.
class BpfStats {
 public:
  BpfStats() : fd_(bpf_enable_stats(BPF_STATS_RUN_TIME)) {}
  ~BpfStats() {
    if (fd_ >= 0) ::close(fd_);
  }
  BpfStats(const BpfStats&) = delete;
  BpfStats& operator=(const BpfStats&) = delete;
  bool enabled() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct ProgRunTime {
  std::uint64_t run_cnt = 0;
  std::uint64_t run_time_ns = 0;
  double ns_per_run() const { return run_cnt ? double(run_time_ns) / double(run_cnt) : 0.0; }
};

// run_cnt / run_time_ns of a pinned program (zeros if it cannot be opened).
inline ProgRunTime prog_run_time(const std::string& pin_path) {
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

// The p-quantile (0..1) of v, nearest rank below; 0 for an empty v.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * double(v.size() - 1))];
}
inline double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

// Per-round paired comparison: the median over rounds of value[i]/base[i],
// so slow drift of a shared machine cancels out.
inline double paired_ratio(const std::vector<double>& value, const std::vector<double>& base) {
  std::vector<double> r;
  for (std::size_t i = 0; i < value.size() && i < base.size(); ++i)
    if (base[i] > 0) r.push_back(value[i] / base[i]);
  return median(r);
}

// Pins the calling thread (and children forked later) to one CPU; no-op
// when cpu < 0.
inline void pin_to_cpu(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::sched_setaffinity(0, sizeof(set), &set);
}

}  // namespace bpfmgr::bench
