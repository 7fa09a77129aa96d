// The SDK as a third-party author uses it: install bpfmgr to a prefix, build
// the examples it installs (examples/execcount: plugin + bench harness;
// examples/sigcount-c: a plugin in C) out of tree against it, install
// that, and use it the way docs/plugin-sdk.md says: load, status, events,
// validate, bench.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include <bpfmgr/bench/measure.hpp>
#include <bpfmgr/pin_paths.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

// bpfmgr installed into a prefix under the build tree, and the example's
// build trees beside it. They persist between the test processes (ctest
// runs each test in its own) so the example builds incrementally.
class Sdk : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto r = run({"cmake", "--install", build_dir(), "--prefix", prefix()});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    for (auto h : {"plugin.hpp", "plugin_api.h", "bpf_common.h", "cgroup.hpp", "option_checks.hpp",
                   "pin_paths.hpp", "bench.hpp", "bench/measure.hpp", "bench/ratio_reporter.hpp"})
      ASSERT_TRUE(fs::exists(prefix() + "/include/bpfmgr/" + h)) << h;
    ASSERT_TRUE(fs::exists(prefix() + "/bin/bpfmgr"));
    // What the pages cite is installed beside them: the examples the
    // tutorial builds and safety.md, which bpfmgr's messages name.
    for (auto f : {"plugin-sdk.md", "safety.md", "benchmarks.md", "pin-layout.md", "manifest.md",
                   "examples/execcount/CMakeLists.txt", "examples/execcount/execcount_plugin.cpp",
                   "examples/sigcount-c/CMakeLists.txt", "examples/sigcount-c/sigcount_plugin.c"})
      ASSERT_TRUE(fs::exists(docs() + "/" + f)) << f;
  }
  static std::string docs() { return prefix() + "/share/doc/bpfmgr"; }
  static std::string work() { return build_dir() + "/sdk-test"; }
  static std::string prefix() { return work() + "/prefix"; }
  static std::string bpfmgr() { return prefix() + "/bin/bpfmgr"; }
  static std::string installed_plugin() {
    return prefix() + "/lib/bpfmgr/plugins/bpfmgr-execcount.so";
  }
  static std::string installed_harness() { return prefix() + "/libexec/bpfmgr/bench_execcount"; }

  // Builds the installed copy of an example (share/doc/bpfmgr/examples/
  // `example`, its plugin `plugin`) in work()/<name> with extra CMake
  // arguments.
  static std::string build_example(const std::string& name, std::vector<std::string> extra,
                                   const std::string& example = "execcount",
                                   const std::string& plugin = "execcount") {
    auto build = work() + "/" + name;
    std::vector<std::string> argv{"cmake", "-S", docs() + "/examples/" + example,
                                  "-B", build, "-DCMAKE_PREFIX_PATH=" + prefix()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    r = run({"cmake", "--build", build});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(fs::exists(build + "/bpfmgr-" + plugin + ".so"));
    return build;
  }
  static std::string gcc_build() { return build_example("build-gcc", {"-DCMAKE_CXX_COMPILER=g++"}); }

  // A manifest of one execcount instance "execs" under `root`.
  static std::string manifest(const PinRoot& root, const std::string& plugin_path_line,
                              const std::string& options = "") {
    return write_temp_file("pin_root = \"" + root.path() + "\"\n" + plugin_path_line +
                           "[[instance]]\nname = \"execs\"\nplugin = \"execcount\"\n" +
                           (options.empty() ? "" : "[instance.options]\n" + options));
  }
  static CommandResult load(const std::string& manifest_path) {
    // Only the manifest's plugin_path and the prefix's own directory.
    ::unsetenv("BPFMGR_PLUGIN_PATH");
    return run({bpfmgr(), "load", manifest_path});
  }
  // Loads the execcount plugin built in `build` into a pin root of its own
  // and checks that it counts.
  static void expect_build_loads_and_counts(const std::string& build) {
    PinRoot root;
    auto r = load(manifest(root, "plugin_path = [\"" + build + "\"]\n"));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    expect_counts(root);
  }

  // Runs /bin/true five times, then checks the map (bpftool) and the
  // plugin's status counters (bpfmgr status --json).
  static void expect_counts(const PinRoot& root) {
    for (int i = 0; i < 5; ++i) ASSERT_EQ(run({"/bin/true"}).exit_code, 0);

    auto dump = json::parse(run({"bpftool", "-j", "map", "dump", "pinned",
                                 root.path() + "/execs/maps/execs"}).out);
    std::uint64_t execs = 0;
    for (auto& e : dump)
      if (e["formatted"]["key"]["comm"] == "true")
        execs = e["formatted"]["value"]["execs"].get<std::uint64_t>();
    EXPECT_GE(execs, 5u) << dump.dump();

    auto r = run({bpfmgr(), "status", "--json", "--pin-root", root.path()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto status = json::parse(r.out);
    std::map<std::string, json> counters;
    for (auto& c : status["instances"][0]["counters"]) counters[c["name"]] = c;
    ASSERT_TRUE(counters.count("execs.true")) << status.dump(2);
    EXPECT_GE(counters["execs.true"]["value"].get<std::uint64_t>(), 5u);
    // Per-CPU totals: summed, with one value per possible CPU.
    for (auto name : {"execs_seen", "execs_counted", "events_dropped"})
      ASSERT_TRUE(counters.count(name)) << name << "\n" << status.dump(2);
    EXPECT_GE(counters["execs_seen"]["value"].get<std::uint64_t>(), 5u);
    EXPECT_GE(counters["execs_seen"]["value"].get<std::uint64_t>(),
              counters["execs_counted"]["value"].get<std::uint64_t>());
    EXPECT_EQ(counters["execs_seen"]["per_cpu"].size(), std::size_t(libbpf_num_possible_cpus()));
    EXPECT_TRUE(status["instances"][0]["details"]["commands seen"].is_string()) << status.dump(2);
  }
};

// Names of the scratch pin roots under /sys/fs/bpf (bench::PinRoot's).
std::set<std::string> scratch_pin_roots() {
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator("/sys/fs/bpf")) {
    auto name = e.path().filename().string();
    if (name.rfind(std::string(bench::kScratchPrefix) + "-", 0) == 0) names.insert(name);
  }
  return names;
}

bool needs(const std::string& lib, const std::string& so) {
  auto r = run({"readelf", "-d", so});
  return r.out.find("[" + lib) != std::string::npos;
}

// The dynamic symbols a library defines (nm -D --defined-only).
std::vector<std::string> exported(const std::string& so) {
  auto r = run({"nm", "-D", "--defined-only", so});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> names;
  std::istringstream lines(r.out);
  for (std::string addr, type, name; lines >> addr >> type >> name;) names.push_back(name);
  return names;
}
const std::vector<std::string> kEntryOnly{"bpfmgr_plugin_entry"};

// g++ and libstdc++; the example's own install rule puts the plugin in the
// installed bpfmgr's plugin directory (BPFMGR_PLUGIN_INSTALL_DIR) and the
// harness where `bpfmgr bench` looks: both found without any path.
TEST_F(Sdk, OutOfTreePluginWithGccInstallsAndLoads) {
  auto build = gcc_build();
  auto so = build + "/bpfmgr-execcount.so";
  EXPECT_TRUE(needs("libstdc++", so));
  // Plugins link neither spdlog nor Boost, and export the entry point
  // alone (without the version script: 17 symbols, libstdc++'s templates).
  EXPECT_FALSE(needs("libspdlog", so));
  EXPECT_FALSE(needs("libboost", so));
  EXPECT_EQ(exported(so), kEntryOnly);
  auto r = run({"cmake", "--install", build});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  struct Uninstall {
    ~Uninstall() {
      fs::remove(installed_plugin());
      fs::remove(installed_harness());
    }
  } uninstall;
  ASSERT_TRUE(fs::exists(installed_plugin()));
  ASSERT_TRUE(fs::exists(installed_harness()));

  PinRoot root;
  r = load(manifest(root, ""));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  expect_counts(root);
  r = run({bpfmgr(), "status", "--json", "--pin-root", root.path()});
  EXPECT_EQ(json::parse(r.out)["instances"][0]["plugin_path"], installed_plugin()) << r.out;
  r = run({bpfmgr(), "unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;

  // `bpfmgr bench execcount` runs the installed harness, which loads the
  // plugin through the installed bpfmgr and prints its paired ratio.
  r = run({bpfmgr(), "bench", "execcount", "--benchmark_min_time=0.01",
           "--benchmark_repetitions=1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("exec with execcount + events reader / without: "), std::string::npos)
      << r.out << r.err;
  // Arguments after the plugin's name are the harness's, --help included:
  // Google Benchmark's help, not bpfmgr's. Without a name, bpfmgr's.
  r = run({bpfmgr(), "bench", "execcount", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("--benchmark_filter"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("Run a plugin's benchmark harness"), std::string::npos) << r.out;
  r = run({bpfmgr(), "bench", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("Run a plugin's benchmark harness"), std::string::npos) << r.out;
  r = run({bpfmgr(), "--log-level", "warn", "bench", "execcount", "--", "--help"});
  EXPECT_NE(r.out.find("--benchmark_filter"), std::string::npos) << r.out << r.err;

  // A harness runs as root: one that others could have written is refused
  // by the plugin trust rules (docs/safety.md), and not run.
  fs::permissions(installed_harness(), fs::perms::others_write, fs::perm_options::add);
  r = run({bpfmgr(), "bench", "execcount", "--benchmark_list_tests=true"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("refusing to run benchmark harness " + installed_harness() +
                       ": the file is writable by everyone"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out.find("BM_Exec"), std::string::npos) << r.out;
}

// `bpfmgr events` prints the formatter's lines for a real exec: a table
// row with its pid and command, and the same record as a JSON line.
TEST_F(Sdk, EventsPrintsAFormattedRecordOfARealExec) {
  auto build = gcc_build();
  PinRoot root;
  auto r = load(manifest(root, "plugin_path = [\"" + build + "\"]\n"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // Execs /bin/true until the reader shows its pid (the reader may still
  // be opening the ring buffer for the first ones).
  auto exec_until_shown = [](bench::Background& reader, const std::string& pid_pattern) {
    for (int i = 0; i < 100; ++i) {
      bench::Background t({"/bin/true"});
      auto pid = std::to_string(t.pid());
      EXPECT_EQ(t.stop(0).exit_code, 0);
      if (reader.wait_for_output(std::regex_replace(pid_pattern, std::regex("PID"), pid), 200ms))
        return pid;
    }
    return std::string();
  };

  {
    bench::Background reader({bpfmgr(), "events", "execs", "--pin-root", root.path()});
    ASSERT_TRUE(reader.wait_for_output("COMM", 10s)) << reader.stop().err;
    auto pid = exec_until_shown(reader, " PID ");
    auto out = reader.stop(SIGINT);
    EXPECT_EQ(out.exit_code, 0) << out.err;
    ASSERT_FALSE(pid.empty()) << out.out << out.err;
    std::istringstream lines(out.out);
    std::string header, line, row;
    std::getline(lines, header);
    EXPECT_EQ(header.find("TIME_NS"), 0u) << out.out;
    while (std::getline(lines, line))
      if (line.find(" " + pid + " ") != std::string::npos) row = line;
    // time_ns pid uid comm
    EXPECT_TRUE(std::regex_match(row, std::regex("[0-9]+ +" + pid + " +0 +true"))) << row;
  }
  {
    bench::Background reader({bpfmgr(), "events", "execs", "--pin-root", root.path(), "--json"});
    auto pid = exec_until_shown(reader, "\"pid\":PID,");
    auto out = reader.stop(SIGINT);
    EXPECT_EQ(out.exit_code, 0) << out.err;
    ASSERT_FALSE(pid.empty()) << out.out << out.err;
    std::istringstream lines(out.out);
    json record;
    for (std::string line; std::getline(lines, line);) {
      auto j = json::parse(line);  // every line is one JSON object
      if (j["pid"] == std::stoi(pid)) record = j;
    }
    EXPECT_EQ(record["comm"], "true") << record.dump();
    EXPECT_EQ(record["uid"], 0) << record.dump();
    EXPECT_GT(record["time_ns"].get<std::uint64_t>(), 0u) << record.dump();
  }
}

// validate() refuses what the schema cannot: the problem points at the
// option's line and column, and nothing is loaded.
TEST_F(Sdk, ValidateRefusesABadOptionWithItsLocation) {
  auto build = gcc_build();
  PinRoot root;
  auto path = manifest(root, "plugin_path = [\"" + build + "\"]\n", "ring_buffer_kb = 100\n");
  for (auto command : {"validate", "load"}) {
    ::unsetenv("BPFMGR_PLUGIN_PATH");
    auto r = run({bpfmgr(), command, path});
    EXPECT_EQ(r.exit_code, 2) << command << ": " << r.out << r.err;
    // Line 7 of the manifest, column 1: `ring_buffer_kb = 100`.
    EXPECT_NE(r.err.find(path + ":7:1: error: instance 'execs', option 'ring_buffer_kb': "
                                "ring_buffer_kb = 100 is not a power of two"),
              std::string::npos)
        << command << ": " << r.err;
    EXPECT_NE(r.err.find("hint: "), std::string::npos) << r.err;
  }
  EXPECT_TRUE(pins_under(root.path()).empty());
}

// The harness from the build tree: a short run with a filter still pairs
// both benchmarks and prints the ratio.
TEST_F(Sdk, BenchHarnessBuildsAndPrintsItsPairedRatio) {
  auto build = gcc_build();
  ASSERT_TRUE(fs::exists(build + "/bench_execcount"));
  auto scratch_before = scratch_pin_roots();
  auto json_out = write_temp_file("", ".json");
  auto r = run({build + "/bench_execcount", "--benchmark_min_time=0.01",
                "--benchmark_repetitions=2", "--benchmark_filter=BM_Exec",
                "--benchmark_out=" + json_out, "--benchmark_out_format=json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      r.out, m,
      std::regex("exec with execcount \\+ events reader / without: ([0-9.]+) \\(paired ratio, "
                 "median of 2 repetition pairs\\)")))
      << r.out << r.err;
  EXPECT_GT(std::stod(m[1]), 0.0);
  // The `bpfmgr events` reader it ran received the execs it timed.
  std::ifstream in(json_out);
  auto report = json::parse(in);
  int with_plugin = 0;
  for (auto& b : report["benchmarks"])
    if (b["name"].get<std::string>().rfind("BM_ExecWithExeccount", 0) == 0 &&
        b["run_type"] == "iteration") {
      ++with_plugin;
      EXPECT_GT(b["events"].get<double>(), 0) << b.dump();
    }
  EXPECT_EQ(with_plugin, 2) << report.dump(2);
  // It unloaded what it loaded: no pin root of its process is left.
  for (auto& name : scratch_pin_roots())
    EXPECT_TRUE(scratch_before.count(name) || !bench::detail::left_by_dead_process(name))
        << "left behind: /sys/fs/bpf/" << name;
}

// bpfmgr_add_plugin(... BENCH harness.cpp) builds the harness with the
// plugin, pointed at the plugin's build directory.
TEST_F(Sdk, AddPluginWithBenchBuildsBoth) {
  auto build = work() + "/build-shorthand";
  auto r = run({"cmake", "-S", source_dir() + "/tests/core/sdk_bench_shorthand", "-B", build,
                "-DCMAKE_PREFIX_PATH=" + prefix(),
                "-DEXAMPLE=" + source_dir() + "/examples/execcount"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = run({"cmake", "--build", build});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(fs::exists(build + "/bpfmgr-execcount.so"));
  r = run({build + "/bench_execcount", "--benchmark_min_time=0.01", "--benchmark_repetitions=1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("exec with execcount + events reader / without: "), std::string::npos)
      << r.out << r.err;
}

// clang++ with LLVM's libc++: a plugin on another C++ standard library than
// bpfmgr's (libstdc++) works, because only C crosses the boundary. (No
// harness: Debian's Google Benchmark is built for libstdc++.)
TEST_F(Sdk, OutOfTreePluginWithClangAndLibcxxLoads) {
  auto build = build_example("build-libcxx",
                             {"-DCMAKE_CXX_COMPILER=clang++", "-DCMAKE_CXX_FLAGS=-stdlib=libc++",
                              "-DCMAKE_MODULE_LINKER_FLAGS=-stdlib=libc++",
                              "-DEXECCOUNT_BENCH=OFF"});
  auto so = build + "/bpfmgr-execcount.so";
  EXPECT_TRUE(needs("libc++", so));
  EXPECT_FALSE(needs("libstdc++", so));
  EXPECT_EQ(exported(so), kEntryOnly);
  expect_build_loads_and_counts(build);
}

// BPFMGR_PLUGIN_STATIC_RUNTIME=ON, as bpfmgr's own plugins are built: the
// C++ runtime is linked in and kept local; dlopen brings no libstdc++.so.
TEST_F(Sdk, StaticRuntimePluginNeedsNoSharedCxxRuntime) {
  auto build = build_example("build-static-runtime",
                             {"-DBPFMGR_PLUGIN_STATIC_RUNTIME=ON", "-DEXECCOUNT_BENCH=OFF"});
  auto so = build + "/bpfmgr-execcount.so";
  EXPECT_FALSE(needs("libstdc++", so));
  EXPECT_FALSE(needs("libgcc_s", so));
  EXPECT_EQ(exported(so), kEntryOnly);
  expect_build_loads_and_counts(build);
}

// examples/sigcount-c, a plugin in C99 with a C-only CMake project: no C++
// runtime in the library, one export, options that reach its globals
// (a signal filter, delivered only), status counters per signal with
// per-CPU values, and the pin path the core names.
TEST_F(Sdk, PluginInPlainCBuildsWithoutACxxCompilerAndCounts) {
  auto build = build_example("build-c", {"-DCMAKE_C_COMPILER=gcc"}, "sigcount-c", "sigcount");
  auto so = build + "/bpfmgr-sigcount.so";
  EXPECT_FALSE(needs("libstdc++", so));
  EXPECT_FALSE(needs("libc++", so));
  EXPECT_EQ(exported(so), kEntryOnly);
  auto plugin_path = "plugin_path = [\"" + build + "\"]\n";
  PinRoot root;

  // validate() in C: the problem names its option's line.
  auto bad = write_temp_file("pin_root = \"" + root.path() + "\"\n" + plugin_path +
                             "[[instance]]\nname = \"s\"\nplugin = \"sigcount\"\n"
                             "[instance.options]\nsignal = 32\n");
  ::unsetenv("BPFMGR_PLUGIN_PATH");
  auto r = run({bpfmgr(), "validate", bad});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find(bad + ":7:1: error: instance 's', option 'signal': signals 32 and 33 "
                             "are reserved by the C library"),
            std::string::npos)
      << r.err;

  auto path = write_temp_file(
      "pin_root = \"" + root.path() + "\"\n" + plugin_path +
      "[[instance]]\nname = \"usr2\"\nplugin = \"sigcount\"\n[instance.options]\nsignal = 12\n"
      "[[instance]]\nname = \"every\"\nplugin = \"sigcount\"\n"
      "[[instance]]\nname = \"delivered\"\nplugin = \"sigcount\"\n"
      "[instance.options]\nonly_delivered = true\n");
  r = load(path);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // Five SIGUSR2 this process handles (delivered), three SIGWINCH it
  // ignores by default (generated, then dropped as ignored).
  struct sigaction sa {}, old_usr2 {}, old_winch {};
  sa.sa_handler = [](int) {};
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old_usr2), 0);
  sa.sa_handler = SIG_DFL;
  ASSERT_EQ(::sigaction(SIGWINCH, &sa, &old_winch), 0);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(::kill(::getpid(), SIGWINCH), 0);
  ::sigaction(SIGUSR2, &old_usr2, nullptr);
  ::sigaction(SIGWINCH, &old_winch, nullptr);

  r = run({bpfmgr(), "status", "--json", "--pin-root", root.path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto status = json::parse(r.out);
  std::map<std::string, std::map<std::string, json>> counters;
  std::map<std::string, json> details;
  for (auto& inst : status["instances"]) {
    for (auto& c : inst["counters"]) counters[inst["instance"]][c["name"]] = c;
    details[inst["instance"]] = inst["details"];
  }
  auto value = [&](const std::string& inst, const std::string& counter) -> std::uint64_t {
    auto& c = counters[inst];
    return c.count(counter) ? c[counter]["value"].get<std::uint64_t>() : 0;
  };
  // The filter reached the BPF global: only SIGUSR2 is counted.
  EXPECT_GE(value("usr2", "signals.SIGUSR2"), 5u) << status.dump(2);
  ASSERT_EQ(counters["usr2"].size(), 1u) << status.dump(2);
  auto& per_cpu = counters["usr2"]["signals.SIGUSR2"]["per_cpu"];
  EXPECT_EQ(per_cpu.size(), std::size_t(libbpf_num_possible_cpus()));
  std::uint64_t sum = 0;
  for (auto& v : per_cpu) sum += v.get<std::uint64_t>();
  EXPECT_EQ(sum, value("usr2", "signals.SIGUSR2"));
  // Ignored signals are left out with only_delivered, counted without.
  EXPECT_GE(value("every", "signals.SIGUSR2"), 5u);
  EXPECT_GE(value("delivered", "signals.SIGUSR2"), 5u);
  EXPECT_GE(value("every", "signals.SIGWINCH"), value("delivered", "signals.SIGWINCH") + 3)
      << status.dump(2);
  // Details: the filter, and the map's pin as the core names it.
  EXPECT_EQ(details["usr2"]["counting"], "SIGUSR2") << status.dump(2);
  EXPECT_EQ(details["every"]["counting"], "all");
  auto pin = details["usr2"]["signals map"].get<std::string>();
  EXPECT_EQ(pin, pin_paths::pin(pin_paths::instance_dir(root.path(), "usr2"), PinKind::Map,
                                "signals"));
  int fd = bpf_obj_get(pin.c_str());
  EXPECT_GE(fd, 0) << pin;
  if (fd >= 0) ::close(fd);
  r = run({bpfmgr(), "unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// The harness helper loads into a pin root it is given, finds pins by the
// SDK's pin paths, and unpins only what its load created.
TEST_F(Sdk, BenchHelperLoadsIntoAGivenPinRootAndLeavesOthersAlone) {
  auto build = gcc_build();
  PinRoot root;
  auto r = load(manifest(root, "plugin_path = [\"" + build + "\"]\n"));  // instance "execs"
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ::setenv("BPFMGR_BINARY", bpfmgr().c_str(), 1);
  {
    bench::LoadedManifest mine("[[instance]]\nname = \"mine\"\nplugin = \"execcount\"\n",
                               {build}, root.path());
    EXPECT_EQ(mine.pin_root(), root.path());
    for (auto pin : {mine.map_pin("mine", "execs"), mine.map_pin("execs", "execs"),
                     mine.prog_pin("mine", "count_exec")}) {
      int fd = bpf_obj_get(pin.c_str());
      EXPECT_GE(fd, 0) << pin;
      if (fd >= 0) ::close(fd);
    }
    EXPECT_EQ(mine.map_pin("mine", "execs"), root.path() + "/mine/maps/execs");
  }
  ::unsetenv("BPFMGR_BINARY");
  EXPECT_FALSE(fs::exists(root.path() + "/mine"));
  EXPECT_TRUE(fs::exists(root.path() + "/execs/state"));  // another manifest's: kept
  r = run({bpfmgr(), "unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace bpfmgr::test
