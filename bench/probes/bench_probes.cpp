// bench_probes: the probes plugin's costs, side by side in one run.
//
//  * syscall cost per call (thread CPU time) with no programs, empty programs
//    on raw_tp sys_enter/sys_exit, the full tracer (latency sampled 1/16),
//    and the full tracer timing every call; rounds interleave the configs so
//    a noisy host hits them all alike; medians are printed at the end;
//  * loopback TCP connection churn with and without the connection probes;
//  * ring-buffer events/s delivered to a real `bpfmgr events --json`
//    process, at paced rates up to overload (drops counted, no stall).
//
// Instances are loaded with the real `bpfmgr load` under a private pin root
// and unpinned afterwards; the baseline (empty programs on the same hooks)
// is the test-only plugin probes_bench (bench/probes), not the shipped one.
// Run as root: build*/bin/bench_probes
//   [--rounds=N] plus the usual --benchmark_* flags.
#include <benchmark/benchmark.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <bpfmgr/bench.hpp>
#include "probes.h"
#include "probes_workload.hpp"

extern char** environ;

namespace {

namespace w = bpfmgr::probes::workload;
namespace fs = std::filesystem;

// One loaded instance named "bench" of `plugin` (probes, or the test-only
// probes_bench with the baseline) under a private pin root (nullptr:
// nothing loaded).
class Loaded {
 public:
  Loaded(const char* plugin, const std::string& options) {
    if (!plugin) return;
    m_ = std::make_unique<bpfmgr::bench::LoadedManifest>(
        "[[instance]]\nname = \"bench\"\nplugin = \"" + std::string(plugin) +
            "\"\n[instance.options]\n" + options,
        std::vector<std::string>{BPFMGR_BENCH_PROBES_BENCH_DIR});
  }
  std::string map(const std::string& m) const { return m_->map_pin("bench", m); }
  std::string prog(const std::string& p) const { return m_->prog_pin("bench", p); }
  const std::string& pin_root() const { return m_->pin_root(); }

 private:
  std::unique_ptr<bpfmgr::bench::LoadedManifest> m_;
};

struct Config {
  const char* name;
  const char* plugin;  // nullptr: nothing loaded
  const char* options;
  const char* enter_prog;  // the programs on sys_enter/sys_exit
  const char* exit_prog;
};
const Config kConfigs[] = {
    {"none", nullptr, "", nullptr, nullptr},
    {"empty", "probes_bench", "mode = \"empty\"\n", "bench_empty_enter", "bench_empty_exit"},
    {"full", "probes", "kinds = [\"syscalls\"]\n", "probes_sys_enter", "probes_sys_exit"},
    {"full_every", "probes", "kinds = [\"syscalls\"]\nlatency_sample_every = 1\n",
     "probes_sys_enter", "probes_sys_exit"},
};

// name -> config -> samples (ns per call)
std::map<std::string, std::map<std::string, std::vector<double>>> g_samples;

using Workload = double (*)(std::uint64_t);
double sockpair_per_call(std::uint64_t n) { return w::socketpair_rw_ns(n / 2); }

void BM_Syscall(benchmark::State& state, std::string wl, Workload fn, Config cfg) {
  Loaded l(cfg.plugin, cfg.options);
  for (auto _ : state) {
    double ns = fn(200000);
    state.SetIterationTime(ns * 1e-9);  // per call
    g_samples[wl][cfg.name].push_back(ns);
  }
  state.counters["ns_per_call"] = g_samples[wl][cfg.name].back();
}

void BM_TcpChurn(benchmark::State& state, bool probes) {
  Loaded l(probes ? "probes" : nullptr, "kinds = [\"connect\", \"accept\", \"close\"]\n");
  double rate = 0;
  for (auto _ : state) rate = w::tcp_churn_per_sec(0.5);
  state.counters["conn_per_s"] = rate;
  g_samples["tcp churn conn/s"][probes ? "with probes" : "without"].push_back(rate);
}

std::uint64_t counter_sum(const std::string& path, __u64 probes_counters::*f) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  std::vector<probes_counters> v(std::max(1, libbpf_num_possible_cpus()));
  std::uint32_t zero = 0;
  std::uint64_t s = 0;
  if (!bpf_map_lookup_elem(fd, &zero, v.data()))
    for (auto& c : v) s += c.*f;
  close(fd);
  return s;
}

struct RbRow {
  double offered, achieved;
  std::uint64_t emitted, dropped, delivered;
};
std::vector<RbRow> g_rb;

// `bpfmgr events bench --json` as a child process; counts its lines.
void BM_RingBuffer(benchmark::State& state) {
  double rate = double(state.range(0));  // events/s offered, 0 = unpaced
  Loaded l("probes", "kinds = [\"syscalls\"]\nsyscall_events = true\nring_buffer_kb = 1024\n"
                     "pids = [" + std::to_string(getpid()) + "]\n");
  for (auto _ : state) {
    int pfd[2];
    if (pipe(pfd)) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    std::vector<std::string> args = {bpfmgr::bench::bpfmgr_binary(), "events", "bench",
                                     "--pin-root", l.pin_root(), "--json", "--duration", "30"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid;
    posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    std::atomic<std::uint64_t> lines{0};
    std::thread reader([&] {
      char buf[1 << 16];
      ssize_t n;
      while ((n = read(pfd[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // attach
    std::uint64_t e0 = counter_sum(l.map("counters"), &probes_counters::events_emitted);
    std::uint64_t d0 = counter_sum(l.map("counters"), &probes_counters::events_dropped);
    std::uint64_t l0 = lines.load();
    std::uint64_t msgs = rate > 0 ? std::uint64_t(rate / 2) : 300000;  // ~1 s
    double achieved = w::paced_socketpair(msgs, rate / 2) * 2;
    std::uint64_t e1 = counter_sum(l.map("counters"), &probes_counters::events_emitted);
    std::uint64_t d1 = counter_sum(l.map("counters"), &probes_counters::events_dropped);
    // Give the reader time to catch up with what was emitted.
    for (int i = 0; i < 40 && lines.load() - l0 < e1 - e0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    reader.join();
    close(pfd[0]);
    std::uint64_t delivered = std::min<std::uint64_t>(lines.load() - l0, e1 - e0);
    g_rb.push_back({rate, achieved, e1 - e0, d1 - d0, delivered});
    state.counters["offered_ev_s"] = rate;
    state.counters["achieved_ev_s"] = achieved;
    state.counters["delivered"] = double(delivered);
    state.counters["dropped"] = double(d1 - d0);
  }
}

// Program time per invocation from the kernel's own accounting
// (kernel.bpf_stats_enabled): what the programs cost without the hook
// dispatch, immune to other processes. Stats add two clock reads per run to
// every program alike.
struct ProgTime {
  std::string cfg, workload;
  double enter_ns, exit_ns;
};
std::vector<ProgTime> g_prog;

void BM_ProgTime(benchmark::State& state, Config cfg, std::string wl, Workload fn) {
  bpfmgr::bench::BpfStats stats;
  Loaded l(cfg.plugin, cfg.options);
  for (auto _ : state) fn(200000);
  g_prog.push_back({cfg.name, wl,
                    bpfmgr::bench::prog_run_time(l.prog(cfg.enter_prog)).ns_per_run(),
                    bpfmgr::bench::prog_run_time(l.prog(cfg.exit_prog)).ns_per_run()});
}

void print_summary() {
  std::printf("\n==== probes: medians, thread CPU ns per call ====\n");
  std::printf("%-34s %8s %8s %8s %8s | %7s %7s %7s | %6s %6s %6s\n", "workload", "none",
              "empty", "full", "f_every", "+empty", "+full", "+f_ev", "x_add", "x_tot",
              "xe_tot");
  for (auto& [wl, byc] : g_samples) {
    if (!byc.count("none")) continue;
    double n = w::median(byc["none"]), e = w::median(byc["empty"]),
           f = w::median(byc["full"]), fe = w::median(byc["full_every"]);
    std::printf("%-34s %8.1f %8.1f %8.1f %8.1f | %7.1f %7.1f %7.1f | %6.2f %6.2f %6.2f\n",
                wl.c_str(), n, e, f, fe, e - n, f - n, fe - n,
                e - n > 0 ? (f - n) / (e - n) : 0.0, f / e, fe / e);
  }
  std::printf("x_add: ns added by the tracer / by empty programs on the same hooks;\n"
              "x_tot: cost of a traced call with the tracer / with empty programs\n");
  if (g_samples.count("tcp churn conn/s")) {
    auto& c = g_samples["tcp churn conn/s"];
    double a = w::median(c["without"]), b = w::median(c["with probes"]);
    std::printf("\ntcp connect+accept+close, loopback: %.0f conn/s without, %.0f with "
                "connection probes (%.1f%% fewer)\n",
                a, b, a > 0 ? (a - b) / a * 100 : 0);
  }
  if (!g_prog.empty()) {
    std::printf("\nBPF program time per run (kernel bpf_stats; each figure carries the "
                "same stats overhead)\n");
    std::printf("%-12s %-34s %9s %9s %9s\n", "config", "workload", "enter", "exit", "sum");
    for (auto& p : g_prog)
      std::printf("%-12s %-34s %9.1f %9.1f %9.1f\n", p.cfg.c_str(), p.workload.c_str(),
                  p.enter_ns, p.exit_ns, p.enter_ns + p.exit_ns);
  }
  if (!g_rb.empty()) {
    std::printf("\nring buffer -> `bpfmgr events --json` (separate process), 1 MiB ring\n");
    std::printf("%12s %12s %10s %10s %10s\n", "offered/s", "achieved/s", "emitted",
                "delivered", "dropped");
    for (auto& r : g_rb)
      std::printf("%12s %12.0f %10llu %10llu %10llu\n",
                  r.offered > 0 ? std::to_string(std::uint64_t(r.offered)).c_str() : "unpaced",
                  r.achieved, (unsigned long long)r.emitted,
                  (unsigned long long)r.delivered, (unsigned long long)r.dropped);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--rounds=", 9) == 0)
      rounds = std::atoi(argv[i] + 9);
    else
      rest.push_back(argv[i]);
  }
  int rc = argc;
  argc = int(rest.size());
  (void)rc;
  setenv("BPFMGR_LOG_LEVEL", "error", 1);

  struct Wl {
    const char* name;
    Workload fn;
  };
  const Wl wls[] = {{"write 1B /dev/null (not a socket)", &w::devnull_write_ns},
                    {"getpid (untraced)", &w::getpid_ns},
                    {"socketpair write+read (per call)", &sockpair_per_call}};
  for (int r = 0; r < rounds; ++r)
    for (auto& cfg : kConfigs)
      for (auto& wl : wls)
        benchmark::RegisterBenchmark(
            ("syscall/" + std::string(cfg.name) + "/" + wl.name + "/round" +
             std::to_string(r))
                .c_str(),
            BM_Syscall, std::string(wl.name), wl.fn, cfg)
            ->Iterations(1)
            ->UseManualTime();
  for (int r = 0; r < std::max(2, rounds / 2); ++r) {
    benchmark::RegisterBenchmark(("tcp_churn/without/round" + std::to_string(r)).c_str(),
                                 BM_TcpChurn, false)
        ->Iterations(1);
    benchmark::RegisterBenchmark(("tcp_churn/with_probes/round" + std::to_string(r)).c_str(),
                                 BM_TcpChurn, true)
        ->Iterations(1);
  }
  for (auto& cfg : kConfigs) {
    if (!cfg.plugin) continue;
    for (auto& wl : wls)
      benchmark::RegisterBenchmark(
          ("prog_time/" + std::string(cfg.name) + "/" + wl.name).c_str(), BM_ProgTime, cfg,
          std::string(wl.name), wl.fn)
          ->Iterations(1);
  }
  benchmark::RegisterBenchmark("ring_buffer/offered_ev_s", BM_RingBuffer)
      ->Arg(50000)
      ->Arg(100000)
      ->Arg(200000)
      ->Arg(400000)
      ->Arg(0)
      ->Iterations(1);

  benchmark::Initialize(&argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_summary();
  return 0;
}
