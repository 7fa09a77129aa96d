// `bpfmgr serve` against the real kernel: start-up apply, drift repaired
// (a simulated reboot, a link pin removed), manifest changes by rename and
// by ConfigMap symlink swap, an invalid manifest kept out, one serve per pin
// root, other manifests' instances left alone, signals, run counters.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "serve_support.hpp"
#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

std::string manifest_text(const PinRoot& root, const std::vector<std::string>& instances) {
  std::string s = "pin_root = \"" + root.path() + "\"\nplugin_path = [\"" +
                  test_plugin_dir() + "\"]\n";
  for (auto& name : instances)
    s += "\n[[instance]]\nname = \"" + name +
         "\"\nplugin = \"testcount\"\n[instance.options]\ntgid = " +
         std::to_string(::getpid()) + "\n";
  return s;
}

// A directory of its own, removed at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/bpfmgr-serve-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Replaces a file the way editors do: write a new one, rename over.
void replace_file(const std::string& path, const std::string& text) {
  auto tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  fs::rename(tmp, path);
}

std::uint32_t prog_id(const std::string& root, const std::string& inst) {
  auto r = run_bpfmgr({"status", "--pin-root", root, "--json", inst});
  auto j = json::parse(r.out.empty() ? "{}" : r.out);
  for (auto& i : j.value("instances", json::array()))
    for (auto& p : i.value("programs", json::array()))
      if (p.contains("id")) return p["id"].get<std::uint32_t>();
  return 0;
}

std::uint64_t getppid_calls(const std::string& root, const std::string& inst) {
  auto r = run_bpfmgr({"status", "--pin-root", root, "--json", inst});
  auto j = json::parse(r.out.empty() ? "{}" : r.out);
  for (auto& i : j.value("instances", json::array()))
    for (auto& c : i.value("counters", json::array()))
      if (c["name"] == "getppid_calls") return c["value"].get<std::uint64_t>();
  return 0;
}

std::string cgroup2_root_for_tests() {
  std::ifstream in("/proc/self/mounts");
  std::string dev, dir, type, rest;
  while (in >> dev >> dir >> type && std::getline(in, rest))
    if (type == "cgroup2") return dir;
  return "/sys/fs/cgroup";
}

void call_getppid(int n) {
  for (int i = 0; i < n; ++i) ::getppid();
}

TEST(Serve, AppliesAtStartServesMetricsAndStopsLeavingProgramsRunning) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  auto s = start_serve(manifest, {"--interval", "30"});
  ASSERT_TRUE(s.process->running());
  auto m = s.metrics();
  EXPECT_EQ(metric(m, "bpfmgr_instance_up{instance_name=\"count\"}"), 1) << m;
  EXPECT_EQ(metric(m, "bpfmgr_reconciles_total{trigger=\"start\"}"), 1);
  EXPECT_EQ(metric(m, "bpfmgr_manifest_valid"), 1);
  auto health = http_get(s.port, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  // Read-only: nothing but GET is served.
  EXPECT_NE(http_get(s.port, "/nothing-here")->status, 200);

  // The plugin's counter is exported and follows the kernel.
  call_getppid(1000);
  auto after = metric(s.metrics(), "bpfmgr_plugin_testcount_getppid_calls{instance_name=\"count\"}");
  ASSERT_TRUE(after);
  EXPECT_GE(*after, 1000);

  auto id = prog_id(root.path(), "count");
  EXPECT_EQ(s.process->stop(SIGTERM), 0) << s.process->log();
  // Pins stay, the program keeps running: the next serve adopts it.
  EXPECT_EQ(prog_id(root.path(), "count"), id);
  auto again = start_serve(manifest, {"--interval", "30"});
  EXPECT_EQ(prog_id(root.path(), "count"), id) << "a restart reloaded the program";
  EXPECT_NE(again.process->log().find("unchanged [count]"), std::string::npos)
      << again.process->log();
}

TEST(Serve, RebootSimulationEverythingUnpinnedIsRestoredWithinOneInterval) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count-a", "count-b"}));
  const double interval = 2;
  auto s = start_serve(manifest, {"--interval", "2"});
  ASSERT_TRUE(s.process->running());

  // What a reboot leaves: an empty bpffs.
  auto t0 = std::chrono::steady_clock::now();
  for (auto& e : fs::directory_iterator(root.path())) fs::remove_all(e.path());
  ASSERT_TRUE(fs::is_empty(root.path()));
  bool restored = wait_until(
      [&] {
        return metric(s.metrics(), "bpfmgr_repairs_total{reason=\"instance_missing\"}")
                   .value_or(0) >= 2;
      },
      30s);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(restored) << s.process->log();
  std::printf("reconcile latency after drift (everything unpinned): %.2f s "
              "(interval %.0f s)\n", took, interval);
  // Within one interval, plus the time the load itself takes.
  auto m = s.metrics();
  double apply_s = *metric(m, "bpfmgr_apply_duration_seconds_sum") /
                   *metric(m, "bpfmgr_apply_duration_seconds_count");
  EXPECT_LT(took, interval + 3 * apply_s + 1.0) << "apply takes " << apply_s << " s";
  EXPECT_EQ(metric(m, "bpfmgr_instance_up{instance_name=\"count-a\"}"), 1);
  EXPECT_EQ(metric(m, "bpfmgr_instance_up{instance_name=\"count-b\"}"), 1);
  // The restored programs run: the kernel counts our calls again.
  auto before = getppid_calls(root.path(), "count-a");
  call_getppid(500);
  EXPECT_GE(getppid_calls(root.path(), "count-a"), before + 500);
}

TEST(Serve, RemovedLinkPinIsRepairedAndCountedByReason) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  auto s = start_serve(manifest, {"--interval", "1"});
  ASSERT_TRUE(s.process->running());
  auto links = root.path() + "/count/links";
  ASSERT_FALSE(fs::is_empty(links));
  for (auto& e : fs::directory_iterator(links)) fs::remove(e.path());
  ASSERT_TRUE(wait_until(
      [&] {
        return metric(s.metrics(), "bpfmgr_repairs_total{reason=\"link_pin_missing\"}")
                   .value_or(0) >= 1;
      },
      20s))
      << s.process->log();
  EXPECT_FALSE(fs::is_empty(links));
  auto before = getppid_calls(root.path(), "count");
  call_getppid(300);
  EXPECT_GE(getppid_calls(root.path(), "count"), before + 300);
  EXPECT_NE(s.process->log().find("count: repaired (link_pin_missing)"), std::string::npos);
}

TEST(Serve, RecreatedCgroupIsReattached) {
  PinRoot root;
  // A cgroup a deploy deletes and creates again under the same path: the
  // old link is detached (its cgroup is gone); serve attaches to the new one.
  auto cg = cgroup2_root_for_tests() + "/" + unique_name("bpfmgr-serve-cg");
  ASSERT_EQ(::mkdir(cg.c_str(), 0755), 0);
  struct RemoveCgroup {
    std::string path;
    ~RemoveCgroup() { ::rmdir(path.c_str()); }
  } remove_cg{cg};
  auto text = "pin_root = \"" + root.path() + "\"\nplugin_path = [\"" + test_plugin_dir() +
              "\"]\n\n[[instance]]\nname = \"egress\"\nplugin = \"testcgroup\"\n"
              "[instance.options]\ncgroup = \"" + cg + "\"\n";
  auto s = start_serve(write_temp_file(text), {"--interval", "1"});
  ASSERT_TRUE(s.process->running());
  ASSERT_EQ(metric(s.metrics(), "bpfmgr_instance_up{instance_name=\"egress\"}"), 1);
  ASSERT_EQ(::rmdir(cg.c_str()), 0);
  ASSERT_EQ(::mkdir(cg.c_str(), 0755), 0);
  ASSERT_TRUE(wait_until(
      [&] {
        return metric(s.metrics(), "bpfmgr_repairs_total{reason=\"cgroup_removed\"}")
                   .value_or(0) >= 1;
      },
      20s))
      << s.process->log();
  EXPECT_EQ(metric(s.metrics(), "bpfmgr_instance_up{instance_name=\"egress\"}"), 1);
  // The new cgroup really has the program: bpftool lists it there.
  auto r = run({"bpftool", "cgroup", "show", cg});
  EXPECT_NE(r.out.find("egress"), std::string::npos) << r.out << r.err;
  // Unload before the cgroup goes (RemoveCgroup runs after this).
  EXPECT_EQ(s.process->stop(SIGTERM), 0);
  run_bpfmgr({"unpin", "--pin-root", root.path(), "--quiet"});
}

TEST(Serve, InvalidManifestIsReportedWithPositionAndRunningStateKept) {
  PinRoot root;
  TempDir dir;
  auto manifest = dir.path + "/manifest.toml";
  std::ofstream(manifest) << manifest_text(root, {"count"});
  auto s = start_serve(manifest, {"--interval", "300"});
  ASSERT_TRUE(s.process->running());
  auto id = prog_id(root.path(), "count");
  ASSERT_NE(id, 0u);

  // Line 8, column 8: a string where the option wants an integer.
  auto bad = manifest_text(root, {"count"});
  auto pos = bad.find("tgid = ");
  bad.replace(pos, bad.find('\n', pos) - pos, "tgid = \"many\"");
  replace_file(manifest, bad);
  ASSERT_TRUE(wait_until(
      [&] { return metric(s.metrics(), "bpfmgr_manifest_errors_total").value_or(0) >= 1; },
      10s))
      << s.process->log();
  EXPECT_EQ(metric(s.metrics(), "bpfmgr_manifest_valid"), 0);
  auto log = s.process->log();
  EXPECT_NE(log.find(manifest + ":8:8: error"), std::string::npos) << log;
  EXPECT_NE(log.find("keeping what runs as it is"), std::string::npos);
  EXPECT_EQ(prog_id(root.path(), "count"), id) << "the running instance was touched";
  EXPECT_EQ(metric(s.metrics(), "bpfmgr_instance_up{instance_name=\"count\"}"), 1);

  // Fixed: valid again, and a real change is applied (a second instance).
  replace_file(manifest, manifest_text(root, {"count", "count-2"}));
  ASSERT_TRUE(wait_until(
      [&] {
        return metric(s.metrics(), "bpfmgr_instance_up{instance_name=\"count-2\"}") == 1;
      },
      20s))
      << s.process->log();
  EXPECT_EQ(metric(s.metrics(), "bpfmgr_manifest_valid"), 1);
  EXPECT_EQ(prog_id(root.path(), "count"), id);
  EXPECT_GE(metric(s.metrics(), "bpfmgr_reconciles_total{trigger=\"file\"}").value_or(0), 2);
}

TEST(Serve, FailingChangeIsRetriedEveryIntervalAndRunningStateKept) {
  PinRoot root;
  TempDir dir;
  auto manifest = dir.path + "/manifest.toml";
  std::ofstream(manifest) << manifest_text(root, {"count"});
  auto s = start_serve(manifest, {"--interval", "1"});
  ASSERT_TRUE(s.process->running());
  auto id = prog_id(root.path(), "count");
  // Valid, but the verifier rejects the new instance's program.
  replace_file(manifest, manifest_text(root, {"count"}) +
                             "\n[[instance]]\nname = \"rejected\"\nplugin = \"testreject\"\n");
  ASSERT_TRUE(wait_until(
      [&] { return metric(s.metrics(), "bpfmgr_applies_total{result=\"failed\"}").value_or(0) >= 2; },
      20s))
      << s.process->log();
  auto m = s.metrics();
  EXPECT_EQ(metric(m, "bpfmgr_last_apply_success"), 0);
  EXPECT_EQ(metric(m, "bpfmgr_manifest_valid"), 1);
  EXPECT_EQ(metric(m, "bpfmgr_instance_up{instance_name=\"count\"}"), 1);
  EXPECT_EQ(prog_id(root.path(), "count"), id);
  EXPECT_FALSE(fs::exists(root.path() + "/rejected"));
  EXPECT_NE(s.process->log().find("apply failed, rolled back"), std::string::npos);
  // Fixed: the next pass commits and the failures stop.
  replace_file(manifest, manifest_text(root, {"count", "count-2"}));
  ASSERT_TRUE(wait_until(
      [&] { return metric(s.metrics(), "bpfmgr_last_apply_success") == 1; }, 20s));
  EXPECT_EQ(metric(s.metrics(), "bpfmgr_instance_up{instance_name=\"count-2\"}"), 1);
}

TEST(Serve, ConfigMapSymlinkSwapIsAppliedWithoutWaitingForTheInterval) {
  PinRoot root;
  TempDir dir;
  // The layout kubelet makes for a ConfigMap volume.
  fs::create_directory(dir.path + "/..2026_11_30_00_00_00.1");
  std::ofstream(dir.path + "/..2026_11_30_00_00_00.1/manifest.toml")
      << manifest_text(root, {"count"});
  fs::create_directory_symlink("..2026_11_30_00_00_00.1", dir.path + "/..data");
  fs::create_symlink("..data/manifest.toml", dir.path + "/manifest.toml");
  auto s = start_serve(dir.path + "/manifest.toml", {"--interval", "300"});
  ASSERT_TRUE(s.process->running());

  // kubelet's update: a new timestamped dir, `..data` swapped by rename.
  fs::create_directory(dir.path + "/..2026_11_30_00_01_00.2");
  std::ofstream(dir.path + "/..2026_11_30_00_01_00.2/manifest.toml")
      << manifest_text(root, {"count", "count-new"});
  fs::create_directory_symlink("..2026_11_30_00_01_00.2", dir.path + "/..data_tmp");
  auto t0 = std::chrono::steady_clock::now();
  fs::rename(dir.path + "/..data_tmp", dir.path + "/..data");
  fs::remove_all(dir.path + "/..2026_11_30_00_00_00.1");
  ASSERT_TRUE(wait_until(
      [&] {
        return metric(s.metrics(), "bpfmgr_instance_up{instance_name=\"count-new\"}") == 1;
      },
      20s))
      << s.process->log();
  std::printf("ConfigMap swap applied after %.2f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  EXPECT_EQ(metric(s.metrics(), "bpfmgr_reconciles_total{trigger=\"interval\"}"), 0);

  // Dropped from the manifest: removed (it names this manifest).
  fs::create_directory(dir.path + "/..2026_11_30_00_02_00.3");
  std::ofstream(dir.path + "/..2026_11_30_00_02_00.3/manifest.toml")
      << manifest_text(root, {"count"});
  fs::create_directory_symlink("..2026_11_30_00_02_00.3", dir.path + "/..data_tmp");
  fs::rename(dir.path + "/..data_tmp", dir.path + "/..data");
  ASSERT_TRUE(wait_until([&] { return !fs::exists(root.path() + "/count-new"); }, 20s))
      << s.process->log();
}

TEST(Serve, SecondServeOnThePinRootExitsAtOnceNamingTheFirst) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  auto first = start_serve(manifest, {"--interval", "300"});
  ASSERT_TRUE(first.process->running());
  auto t0 = std::chrono::steady_clock::now();
  ServeProcess second({manifest, "--metrics-address", "none"});
  auto rc = second.wait_exit(10s);
  ASSERT_TRUE(rc) << "the second serve kept running";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_NE(*rc, 0);
  EXPECT_NE(second.log().find(std::to_string(first.process->pid())), std::string::npos)
      << second.log();
  EXPECT_TRUE(first.process->running());
}

TEST(Serve, InstancesLoadedByHandFromAnotherManifestAreLeftAlone) {
  PinRoot root;
  auto other = write_temp_file(manifest_text(root, {"by-hand"}));
  auto r = run_bpfmgr({"load", other});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto hand_id = prog_id(root.path(), "by-hand");

  TempDir dir;
  auto manifest = dir.path + "/manifest.toml";
  std::ofstream(manifest) << manifest_text(root, {"served"});
  auto s = start_serve(manifest, {"--interval", "1"});
  ASSERT_TRUE(s.process->running());
  // A change, a SIGHUP and a few intervals: none of them touch "by-hand".
  replace_file(manifest, manifest_text(root, {"served", "served-2"}));
  ASSERT_TRUE(wait_until(
      [&] { return metric(s.metrics(), "bpfmgr_instance_up{instance_name=\"served-2\"}") == 1; },
      20s));
  ::kill(s.process->pid(), SIGHUP);
  ASSERT_TRUE(wait_until(
      [&] {
        return metric(s.metrics(), "bpfmgr_reconciles_total{trigger=\"signal\"}").value_or(0) >= 1;
      },
      10s));
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(prog_id(root.path(), "by-hand"), hand_id);
  auto m = s.metrics();
  EXPECT_NE(m.find("bpfmgr_instance_info{instance_name=\"by-hand\",plugin=\"testcount\""),
            std::string::npos);
  EXPECT_EQ(metric(m, "bpfmgr_repairs_total{reason=\"instance_missing\"}"), 0);
  // Stopping with --unpin-on-exit removes only what serve's manifest made.
  EXPECT_EQ(s.process->stop(SIGTERM), 0);
  auto s2 = start_serve(manifest, {"--interval", "300", "--unpin-on-exit"});
  EXPECT_EQ(s2.process->stop(SIGINT), 0) << s2.process->log();
  EXPECT_FALSE(fs::exists(root.path() + "/served"));
  EXPECT_FALSE(fs::exists(root.path() + "/served-2"));
  EXPECT_EQ(prog_id(root.path(), "by-hand"), hand_id);
}

TEST(Serve, EnableBpfStatsExportsPerProgramRunCounters) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  auto s = start_serve(manifest, {"--interval", "300", "--enable-bpf-stats"});
  ASSERT_TRUE(s.process->running());
  auto m = s.metrics();
  EXPECT_EQ(metric(m, "bpfmgr_bpf_stats_enabled"), 1) << m;
  const std::string runs =
      "bpfmgr_program_runs_total{instance_name=\"count\",program=\"count_getppid\"}";
  auto before = metric(m, runs);
  ASSERT_TRUE(before) << m;
  call_getppid(2000);
  auto after = metric(s.metrics(), runs);
  ASSERT_TRUE(after);
  // Every getppid() on the host runs it; ours are at least 2000.
  EXPECT_GE(*after - *before, 2000);
  EXPECT_GT(*metric(s.metrics(),
                    "bpfmgr_program_run_seconds_total{instance_name=\"count\",program=\"count_getppid\"}"),
            0);
}

TEST(Serve, TellsSystemdItIsReadyOnlyAfterTheFirstApply) {
  PinRoot root;
  TempDir dir;
  // What systemd gives a Type=notify service: a datagram socket to write
  // READY=1 to (sd_notify), named by NOTIFY_SOCKET.
  auto sock_path = dir.path + "/notify";
  int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path.c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{30, 0};
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  ServeProcess serve({manifest, "--metrics-address", "none", "--interval", "300"},
                     {{"NOTIFY_SOCKET", sock_path}});
  char buf[512] = {};
  auto n = ::recv(sock, buf, sizeof buf - 1, 0);
  // The instance is pinned before the service says it is ready.
  bool pinned_at_ready = fs::exists(root.path() + "/count/state");
  ::close(sock);
  ASSERT_GT(n, 0) << serve.log();
  std::string msg(buf, n);
  EXPECT_NE(msg.find("READY=1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("STATUS=serving"), std::string::npos) << msg;
  EXPECT_TRUE(pinned_at_ready);
  EXPECT_EQ(serve.stop(SIGTERM), 0) << serve.log();
}

TEST(Serve, BadInvocationsFailClearly) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  auto r = run_bpfmgr({"serve", manifest, "--metrics-address", "no-port"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not HOST:PORT"), std::string::npos) << r.err;
  r = run_bpfmgr({"serve", manifest, "--interval", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  auto bad = write_temp_file("pin_root = 3\n");
  r = run_bpfmgr({"serve", bad, "--metrics-address", "none"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(bad + ":1:"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(root.path() + "/count"));
}

TEST(Cli, VersionUsageLineAndGlobalOptionsAfterTheSubcommand) {
  auto r = run_bpfmgr({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("bpfmgr ", 0), 0u) << r.out;
  r = run_bpfmgr({"--help"});
  EXPECT_NE(r.out.find("Usage: bpfmgr [OPTIONS] SUBCOMMAND"), std::string::npos) << r.out;
  r = run_bpfmgr({"plugins", "--log-level", "error"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_bpfmgr({"plugins", "--log-level", "loud"});
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace bpfmgr::test
