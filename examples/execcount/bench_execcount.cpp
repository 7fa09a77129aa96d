// bench_execcount: what execcount costs a process that runs programs.
//
// Both benchmarks time one fork + exec + wait of /bin/true per iteration:
// BM_ExecBaseline with nothing loaded, BM_ExecWithExeccount with execcount
// loaded (through the real bpfmgr, under a private pin root) and
// `bpfmgr events` reading its ring buffer, as a user would run it. Their
// repetitions alternate (random interleaving) and the ratio is paired per
// repetition, so drift of a shared machine cancels out. The counter
// bpf_ns is the program's own run time per exec (bpf_stats).
//
//   bench_execcount [--benchmark_repetitions=N] [--benchmark_min_time=S] ...
//   bpfmgr bench execcount ...      (once installed: cmake --install)
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <bpfmgr/bench.hpp>
#include <bpfmgr/bench/ratio_reporter.hpp>

extern char** environ;

namespace {

namespace bb = bpfmgr::bench;
using namespace std::chrono_literals;

// One program execution, as a shell would do it.
bool exec_true() {
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, nullptr};
  pid_t pid;
  if (::posix_spawn(&pid, arg0, nullptr, nullptr, argv, environ) != 0) return false;
  int status = 0;
  return ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void exec_loop(benchmark::State& state) {
  for (auto _ : state)
    if (!exec_true()) {
      state.SkipWithError("cannot run /bin/true");
      break;
    }
}

void BM_ExecBaseline(benchmark::State& state) { exec_loop(state); }

void BM_ExecWithExeccount(benchmark::State& state) {
  // The plugin just built (BPFMGR_BENCH_PLUGIN_DIR, from bpfmgr_add_bench's
  // PLUGIN), found before any installed one.
  bb::LoadedManifest loaded("[[instance]]\nname = \"bench\"\nplugin = \"execcount\"\n",
                            {BPFMGR_BENCH_PLUGIN_DIR});
  bb::Background reader(
      {bb::bpfmgr_binary(), "events", "bench", "--pin-root", loaded.pin_root()});
  // The table header is printed once the ring buffer is open.
  if (!reader.wait_for_output("COMM", 10s)) {
    state.SkipWithError(("bpfmgr events did not start: " + reader.stop().err).c_str());
    return;
  }
  // The kernel's own account of the BPF program: run time per exec.
  bb::BpfStats stats;
  exec_loop(state);
  auto bpf = bb::prog_run_time(loaded.prog_pin("bench", "count_exec"));
  state.counters["bpf_ns"] = bpf.ns_per_run();
  auto r = reader.stop(SIGINT);
  if (r.exit_code != 0) state.SkipWithError(("bpfmgr events failed: " + r.err).c_str());
  // Records the reader printed (one line each, after the header).
  std::size_t lines = 0;
  for (char c : r.out) lines += c == '\n';
  state.counters["events"] = double(lines > 0 ? lines - 1 : 0);
}

BENCHMARK(BM_ExecBaseline)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ExecWithExeccount)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  // Defaults that make the ratio paired; flags given later win.
  std::vector<char*> args{argv[0]};
  std::string reps = "--benchmark_repetitions=5";
  std::string interleave = "--benchmark_enable_random_interleaving=true";
  args.push_back(reps.data());
  args.push_back(interleave.data());
  args.insert(args.end(), argv + 1, argv + argc);
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  bb::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  double ratio = reporter.print_paired("exec with execcount + events reader / without",
                                       "BM_ExecWithExeccount", "BM_ExecBaseline");
  benchmark::Shutdown();
  return ratio > 0 ? 0 : 1;
}
