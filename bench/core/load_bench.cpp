// Load + unpin time of a manifest through bpfmgr, side by side with loading
// the same BPF objects through `bpftool prog loadall ... pinmaps`.
//
// bpftool 7.1 cannot attach tracepoints (no autoattach), so its column is
// open + load + pin only; bpfmgr's adds attaching, a state record and the
// staging/commit transaction. Every step of both is a process, as an
// operator runs it: bpfmgr load and unpin; mkdir -p, bpftool, rm -r.
#include <benchmark/benchmark.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <bpfmgr/bench/ratio_reporter.hpp>
#include <bpfmgr/pin_paths.hpp>

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using namespace bpfmgr::test;

constexpr int kInstances = 4;

// The test plugin as a package ships it: stripped (CPACK_STRIP_FILES), in
// a root-owned directory of its own. The build tree's copy carries debug
// info (1.75 MB), which every load hashes and copies.
// Removed at exit (a static's destructor: an atexit handler registered
// while the static is made would run after it is gone).
struct StrippedPluginDir {
  std::string path;  // "" when the copy could not be made
  StrippedPluginDir() {
    char tmpl[] = "/tmp/bpfmgr-bench-plugins-XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    path = tmpl;
    ::chmod(path.c_str(), 0755);
    auto so = path + "/bpfmgr-testcount.so";
    std::error_code ec;
    fs::copy_file(test_plugin_dir() + "/bpfmgr-testcount.so", so, ec);
    if (ec || run({"strip", "--strip-unneeded", so}).exit_code != 0) {
      fs::remove_all(path, ec);
      path.clear();
    }
  }
  ~StrippedPluginDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};
const std::string& stripped_plugin_dir() {
  static const StrippedPluginDir dir;
  return dir.path;
}

std::string manifest(const std::string& root, const std::string& plugin_dir = test_plugin_dir()) {
  std::string m = "pin_root = \"" + root + "\"\nplugin_path = [\"" + plugin_dir + "\"]\n";
  for (int i = 0; i < kInstances; ++i)
    m += "[[instance]]\nname = \"c" + std::to_string(i) +
         "\"\nplugin = \"testcount\"\n[instance.options]\ntgid = 1\n";
  return m;
}

void load_unpin(benchmark::State& state, const std::string& plugin_dir) {
  if (plugin_dir.empty()) return state.SkipWithError("cannot strip a copy of the plugin");
  auto root = "/sys/fs/bpf/" + unique_name("bpfmgr-bench");
  auto path = write_temp_file(manifest(root, plugin_dir));
  for (auto _ : state) {
    auto l = run_bpfmgr({"load", path});
    auto u = run_bpfmgr({"unpin", "--pin-root", root, "--quiet"});
    if (l.exit_code || u.exit_code) state.SkipWithError(("bpfmgr: " + l.err + u.err).c_str());
  }
  state.counters["instances"] = kInstances;
}

void BM_BpfmgrLoadUnpin(benchmark::State& state) { load_unpin(state, test_plugin_dir()); }
void BM_BpfmgrLoadUnpin_StrippedPlugin(benchmark::State& state) {
  load_unpin(state, stripped_plugin_dir());
}

void BM_BpfmgrLoadOnly_Unchanged(benchmark::State& state) {
  // Re-loading an unchanged manifest: what a periodic reconcile costs.
  auto root = "/sys/fs/bpf/" + unique_name("bpfmgr-bench");
  auto path = write_temp_file(manifest(root));
  run_bpfmgr({"load", path});
  for (auto _ : state) {
    auto l = run_bpfmgr({"load", path});
    if (l.exit_code) state.SkipWithError(l.err.c_str());
  }
  run_bpfmgr({"unpin", "--pin-root", root, "--quiet"});
}

// The peer as a script runs it: `mkdir -p` for the pin directories
// (bpftool pins under existing directories only; bpfmgr's layout, so both
// leave the same tree), one `bpftool prog loadall` per instance, `rm -r`.
// Every step is a process, as bpfmgr's load and unpin are.
void bpftool_loadall_unpin(benchmark::State& state, bool fs_in_process) {
  auto object = build_dir() + "/tests/core/plugins/testcount.gen/testcount.bpf.o";
  auto root = "/sys/fs/bpf/" + unique_name("bpftool-bench");
  std::vector<std::string> dirs;
  for (int i = 0; i < kInstances; ++i) {
    auto dir = bpfmgr::pin_paths::instance_dir(root, "c" + std::to_string(i));
    dirs.push_back(bpfmgr::pin_paths::kind_dir(dir, bpfmgr::PinKind::Prog));
    dirs.push_back(bpfmgr::pin_paths::kind_dir(dir, bpfmgr::PinKind::Map));
  }
  std::vector<std::string> mkdir{"mkdir", "-p"};
  mkdir.insert(mkdir.end(), dirs.begin(), dirs.end());
  for (auto _ : state) {
    bool ok = true;
    if (fs_in_process)
      for (auto& d : dirs) fs::create_directories(d);
    else
      ok &= run(mkdir).exit_code == 0;
    for (int i = 0; i < kInstances; ++i)
      ok &= run({"bpftool", "prog", "loadall", object, dirs[2 * i], "pinmaps", dirs[2 * i + 1]})
                .exit_code == 0;
    if (fs_in_process)
      fs::remove_all(root);
    else
      ok &= run({"rm", "-r", root}).exit_code == 0;
    if (!ok) state.SkipWithError("bpftool prog loadall, mkdir or rm failed");
  }
  state.counters["instances"] = kInstances;
}

void BM_BpftoolLoadallUnpin(benchmark::State& state) { bpftool_loadall_unpin(state, false); }
// Before stop 30 the peer: mkdir and rm by this process, no process each.
void BM_BpftoolLoadallUnpin_InProcessFs(benchmark::State& state) {
  bpftool_loadall_unpin(state, true);
}

BENCHMARK(BM_BpfmgrLoadUnpin)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.15);
BENCHMARK(BM_BpfmgrLoadUnpin_StrippedPlugin)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.15);
BENCHMARK(BM_BpfmgrLoadOnly_Unchanged)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.15);
BENCHMARK(BM_BpftoolLoadallUnpin)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.15);
BENCHMARK(BM_BpftoolLoadallUnpin_InProcessFs)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.15);

// On a shared machine the load drifts over seconds, more than the
// differences measured here: unless told otherwise, each benchmark runs in
// short repetitions shuffled among the others', and the ratios pair them.
std::vector<char*> with_default_repetitions(int argc, char** argv) {
  static std::string reps = "--benchmark_repetitions=31";
  static std::string interleave = "--benchmark_enable_random_interleaving=true";
  std::vector<char*> args(argv, argv + argc);
  bool chosen = std::any_of(args.begin(), args.end(), [](const char* a) {
    return std::string_view(a).starts_with("--benchmark_repetitions");
  });
  if (!chosen) {
    args.push_back(reps.data());
    args.push_back(interleave.data());
  }
  args.push_back(nullptr);
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = with_default_repetitions(argc, argv);
  int count = int(args.size()) - 1;
  benchmark::Initialize(&count, args.data());
  bpfmgr::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const std::vector<std::tuple<std::string, std::string, std::string>> ratios{
      {"bpfmgr load+unpin / bpftool loadall+rm", "BM_BpfmgrLoadUnpin",
       "BM_BpftoolLoadallUnpin"},
      {"bpfmgr load+unpin, stripped plugin / bpftool loadall+rm",
       "BM_BpfmgrLoadUnpin_StrippedPlugin", "BM_BpftoolLoadallUnpin"},
      {"bpfmgr no-op reload / bpftool loadall+rm", "BM_BpfmgrLoadOnly_Unchanged",
       "BM_BpftoolLoadallUnpin"},
      {"bpfmgr load+unpin, stripped plugin / bpftool loadall, mkdir+rm in process",
       "BM_BpfmgrLoadUnpin_StrippedPlugin", "BM_BpftoolLoadallUnpin_InProcessFs"},
      {"bpfmgr no-op reload / bpftool loadall, mkdir+rm in process",
       "BM_BpfmgrLoadOnly_Unchanged", "BM_BpftoolLoadallUnpin_InProcessFs"},
  };
  reporter.print_ratios(ratios);
  for (auto& [label, a, b] : ratios) reporter.print_paired(label, a, b);
  benchmark::Shutdown();
}
