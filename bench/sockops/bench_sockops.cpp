// bench_sockops: request/response latency and one-way streaming throughput
// over plain loopback TCP, TCP with the sockops+sockmsg bypass, and an
// AF_UNIX socketpair, registered interleaved so they share one run's
// conditions. Prints Google Benchmark's table, then bypass/TCP and
// bypass/UNIX ratios. Needs root (loads BPF, creates a cgroup).
//
//   bench_sockops [--benchmark_filter=...] [--benchmark_repetitions=N]
#include <benchmark/benchmark.h>

#include <array>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <bpfmgr/bench.hpp>

#include "bypass_workload.hpp"

namespace bp = bpfmgr::bypass;

namespace {

namespace bb = bpfmgr::bench;

// The bypass, loaded through the real bpfmgr into a private pin root, for
// sockets of a private cgroup; both go away when main returns.
std::optional<bb::ScopedCgroup> g_cgroup;
std::optional<bb::LoadedManifest> g_bypass;

void load_bypass() {
  g_cgroup.emplace();
  g_bypass.emplace("[[instance]]\nname = \"bypass-ops\"\nplugin = \"sockops\"\n"
                   "[instance.options]\ncgroup = \"" + g_cgroup->path() + "\"\n"
                   "[[instance]]\nname = \"bypass-msg\"\nplugin = \"sockmsg\"\n"
                   "[instance.maps]\nsock_hash = \"bypass-ops\"\n"
                   "services = \"bypass-ops\"\nsock_state = \"bypass-ops\"\n"
                   "sock_index = \"bypass-ops\"\n",
                   std::vector<std::string>{BPFMGR_BENCH_PLUGIN_DIR});
  // BPFMGR_BENCH_PASSTHROUGH=1: sockets still enter the sockhash but every
  // message takes the TCP path (sockmsg's draining mode): the cost of the
  // sockmap send/receive hooks without the redirect.
  if (std::getenv("BPFMGR_BENCH_PASSTHROUGH")) {
    auto r = bb::run({"bpftool", "map", "update", "pinned",
                      g_bypass->map_pin("bypass-msg", "sockmsg_ctl"), "key", "0", "0", "0",
                      "0", "value", "1", "0", "0", "0", "0", "0", "0", "0"});
    if (r.exit_code != 0) throw std::runtime_error("bpftool map update: " + r.err);
  }
}

enum Kind { Tcp = 0, Bypass = 1, Unix = 2 };
const char* kind_name(int k) { return k == Tcp ? "tcp" : k == Bypass ? "bypass" : "unix"; }

bp::SocketPair make(Kind k, bool nodelay) {
  if (k == Unix) return bp::unix_pair();
  if (k == Bypass) g_cgroup->enter();
  auto p = bp::tcp_pair(nodelay);
  if (k == Bypass) g_cgroup->leave();
  return p;
}

// args: kind, size
void BM_RequestResponse(benchmark::State& state) {
  auto kind = static_cast<Kind>(state.range(0));
  auto size = static_cast<std::size_t>(state.range(1));
  auto p = make(kind, true);
  bp::Echoer echo(p.b, size);
  std::vector<char> buf(size, 'r');
  auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    bp::write_all(p.a, buf.data(), size);
    bp::read_all(p.a, buf.data(), size);
  }
  auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0);
  echo.stop(p.a);
  state.counters["rtt_us"] = us.count() / static_cast<double>(state.iterations());
}

// args: kind, write size, nodelay. Manual time: from the first write until
// the reader has the last byte.
void BM_Stream(benchmark::State& state) {
  auto kind = static_cast<Kind>(state.range(0));
  auto chunk = static_cast<std::size_t>(state.range(1));
  bool nodelay = state.range(2) != 0;
  std::size_t total = chunk == 64 ? (4u << 20) : (64u << 20);
  for (auto _ : state) {
    auto p = make(kind, nodelay);
    double bps = bp::stream_bps(p, chunk, total);
    state.SetIterationTime(static_cast<double>(total) / bps);
    state.SetBytesProcessed(state.bytes_processed() + static_cast<int64_t>(total));
  }
}

struct Result {
  double rtt_us = 0, mbps = 0;
};
std::map<std::string, std::array<Result, 3>> g_results;  // case -> per kind

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (auto& r : runs) {
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      std::string name = r.benchmark_name();
      // BM_X/<kind>/<size>[/<nodelay>]/...
      auto parts = split(name);
      if (parts.size() < 3) continue;
      int kind = std::stoi(parts[1]);
      std::string key = parts[0] + " " + parts[2] +
                        (parts.size() > 3 && parts[3].find(':') == std::string::npos &&
                                 parts[0] == "BM_Stream"
                             ? (parts[3] == "1" ? " nodelay" : " nagle")
                             : "");
      auto& slot = g_results[key][kind];
      if (auto it = r.counters.find("rtt_us"); it != r.counters.end())
        slot.rtt_us = it->second.value;
      if (auto it = r.counters.find("bytes_per_second"); it != r.counters.end())
        slot.mbps = it->second.value / 1e6;
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    auto& o = GetOutputStream();
    o << std::fixed << std::setprecision(2)
      << "\nratios (same run; RR: round-trip time, lower is better; stream: MB/s, "
         "higher is better)\n"
      << std::left << std::setw(26) << "case" << std::right << std::setw(10) << "tcp"
      << std::setw(10) << "bypass" << std::setw(10) << "unix" << std::setw(12) << "bypass/tcp"
      << std::setw(13) << "bypass/unix" << "\n";
    for (auto& [k, v] : g_results) {
      bool rr = k.rfind("BM_RequestResponse", 0) == 0;
      double t = rr ? v[Tcp].rtt_us : v[Tcp].mbps, b = rr ? v[Bypass].rtt_us : v[Bypass].mbps,
             u = rr ? v[Unix].rtt_us : v[Unix].mbps;
      o << std::left << std::setw(26) << (rr ? "rr_us " : "MB/s ") + k.substr(k.find(' ') + 1)
        << std::right << std::setw(10) << t << std::setw(10) << b << std::setw(10) << u
        << std::setw(11) << (t > 0 ? b / t : 0) << "x" << std::setw(12) << (u > 0 ? b / u : 0)
        << "x\n";
    }
  }

 private:
  static std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
      auto pos = s.find('/', start);
      out.push_back(s.substr(start, pos - start));
      if (pos == std::string::npos) break;
      start = pos + 1;
    }
    return out;
  }
};

void register_all() {
  for (int size : {64, 1024, 16384, 65536})
    for (int k : {Tcp, Bypass, Unix})
      benchmark::RegisterBenchmark(
          ("BM_RequestResponse/" + std::to_string(k) + "/" + std::to_string(size)).c_str(),
          BM_RequestResponse)
          ->Args({k, size})
          ->MinTime(0.5)
          ->Unit(benchmark::kMicrosecond);
  for (int nodelay : {1, 0})
    for (int size : {64, 4096, 65536})
      for (int k : {Tcp, Bypass, Unix})
        benchmark::RegisterBenchmark(("BM_Stream/" + std::to_string(k) + "/" +
                                      std::to_string(size) + "/" + std::to_string(nodelay))
                                         .c_str(),
                                     BM_Stream)
            ->Args({k, size, nodelay})
            ->UseManualTime()
            ->Iterations(3)
            ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::cerr << "kinds: 0=" << kind_name(0) << " 1=" << kind_name(1) << " 2=" << kind_name(2)
            << "\n";
  try {
    load_bypass();
  } catch (const std::exception& e) {
    std::cerr << "cannot load the bypass (root? bpfmgr built?): " << e.what() << "\n";
    return 1;
  }
  register_all();
  RatioReporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  g_bypass.reset();
  g_cgroup.reset();
  benchmark::Shutdown();
  return 0;
}
