// `bpfmgr serve` against the real kernel: start-up apply, drift repaired
// (a simulated reboot, a link pin removed), manifest changes by rename and
// by ConfigMap symlink swap, an invalid manifest kept out, one serve per pin
// root, other manifests' instances left alone, signals, run counters.
#include <gtest/gtest.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

// `bpfmgr status` finds nothing wrong with the instance.
bool drift_free(const std::string& root, const std::string& inst) {
  auto r = run_bpfmgr({"status", "--pin-root", root, "--json", inst});
  if (r.exit_code != 0 || r.out.empty()) return false;
  auto j = json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return false;
  for (auto& i : j.value("instances", json::array())) {
    if (i.contains("error") || i.contains("drift") || !i.value("complete", false)) return false;
    for (auto& l : i.value("links", json::array()))
      if (l.contains("error")) return false;
    return !i.value("links", json::array()).empty();
  }
  return false;
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
        return metric_sum(s.metrics(), "bpfmgr_repairs_total",
                          "reason=\"instance_missing\"") >= 2;
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
        return metric(s.metrics(), "bpfmgr_repairs_total{instance_name=\"count\","
                                   "reason=\"link_pin_missing\"}")
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
        return metric(s.metrics(), "bpfmgr_repairs_total{instance_name=\"egress\","
                                   "reason=\"cgroup_removed\"}")
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
  EXPECT_EQ(metric_sum(m, "bpfmgr_repairs_total", "reason=\"instance_missing\""), 0);
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

// A manifest with a testcount instance and a testcgroup one on `cgroup`.
std::string count_and_cgroup(const PinRoot& root, const std::string& cgroup) {
  return manifest_text(root, {"count"}) + "\n[[instance]]\nname = \"egress\"\n"
         "plugin = \"testcgroup\"\n[instance.options]\ncgroup = \"" + cgroup + "\"\n";
}

TEST(Serve, InstanceWhoseCgroupIsMissingIsReportedRetriedAndTheOthersRun) {
  PinRoot root;
  auto cg = cgroup2_root_for_tests() + "/" + unique_name("bpfmgr-serve-late");
  struct RemoveCgroup {
    std::string path;
    ~RemoveCgroup() { ::rmdir(path.c_str()); }
  } remove_cg{cg};
  TempDir dir;
  auto sock_path = dir.path + "/notify";
  int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path.c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{30, 0};
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // The cgroup does not exist yet (a boot where serve starts first).
  auto manifest = write_temp_file(count_and_cgroup(root, cg));
  int port = free_port();
  ServeProcess serve({manifest, "--metrics-address", "127.0.0.1:" + std::to_string(port),
                      "--interval", "300"},
                     {{"NOTIFY_SOCKET", sock_path}});
  char buf[512] = {};
  auto n = ::recv(sock, buf, sizeof buf - 1, 0);
  ::close(sock);
  ASSERT_GT(n, 0) << serve.log();
  std::string msg(buf, n);
  // Ready for systemd (the others run), and it says what is degraded.
  EXPECT_NE(msg.find("READY=1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("STATUS=degraded"), std::string::npos) << msg;
  EXPECT_NE(msg.find("egress"), std::string::npos) << msg;
  ASSERT_TRUE(serve.running()) << serve.log();
  auto metrics = [&] {
    auto r = http_get(port, "/metrics");
    return r ? r->body : std::string();
  };
  auto m = metrics();
  EXPECT_EQ(metric(m, "bpfmgr_instance_up{instance_name=\"count\"}"), 1) << m;
  EXPECT_EQ(metric(m, "bpfmgr_instance_failing{instance_name=\"egress\"}"), 1) << m;
  EXPECT_EQ(metric(m, "bpfmgr_instance_failing{instance_name=\"count\"}"), 0) << m;
  EXPECT_EQ(metric(m, "bpfmgr_ready"), 0);
  EXPECT_GE(metric(m, "bpfmgr_instance_apply_failures_total{instance_name=\"egress\"}")
                .value_or(0), 1);
  auto ready = http_get(port, "/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_NE(ready->body.find("degraded: 1 of 2"), std::string::npos) << ready->body;
  EXPECT_NE(ready->body.find("egress: cannot be applied"), std::string::npos) << ready->body;
  EXPECT_EQ(http_get(port, "/healthz")->status, 200) << "liveness is not readiness";
  EXPECT_NE(serve.log().find("egress"), std::string::npos);
  // `bpfmgr status` says it too, from the record serve keeps in /run/bpfmgr.
  auto st = run_bpfmgr({"status", "--pin-root", root.path(), "--json"});
  auto sj = json::parse(st.out.empty() ? "{}" : st.out, nullptr, false);
  ASSERT_TRUE(sj.is_object() && sj.contains("serve")) << st.out << st.err;
  EXPECT_EQ(sj["serve"].value("pid", 0), serve.pid()) << sj["serve"];
  EXPECT_EQ(sj["serve"].value("ready", true), false) << sj["serve"];
  EXPECT_EQ(sj["serve"].value("instances", 0), 2) << sj["serve"];
  EXPECT_EQ(sj["serve"].value("up", 0), 1) << sj["serve"];
  auto problems = sj["serve"].value("problems", json::array());
  ASSERT_EQ(problems.size(), 1u) << sj["serve"];
  EXPECT_EQ(problems[0].value("instance", ""), "egress");
  EXPECT_NE(problems[0].value("why", "").find("cannot be applied"), std::string::npos);
  auto text = run_bpfmgr({"status", "--pin-root", root.path()});
  EXPECT_NE(text.out.find("degraded, 1 of 2 instance(s) up"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("  egress: cannot be applied"), std::string::npos) << text.out;
  // A health check fails on it (and only with --check).
  EXPECT_EQ(text.exit_code, 0) << text.err;
  auto check = run_bpfmgr({"status", "--pin-root", root.path(), "--check"});
  EXPECT_EQ(check.exit_code, 3) << check.err;
  EXPECT_NE(check.err.find("not as loaded: serve PID " + std::to_string(serve.pid()) +
                           ": degraded, 1 of 2 instance(s) up"),
            std::string::npos)
      << check.err;
  // Retried every 5 s (each failure counted) but logged once, not per retry.
  std::this_thread::sleep_for(11s);
  auto occurrences = [](const std::string& hay, const std::string& needle) {
    std::size_t n = 0;
    for (auto p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
    return n;
  };
  auto log = serve.log();
  EXPECT_EQ(occurrences(log, "cannot be applied"), 1u) << log;
  EXPECT_EQ(occurrences(log, "failing [egress]"), 1u) << log;
  // Each retry's attach of the optional hook is not news either.
  EXPECT_EQ(occurrences(log, "egress: optional hook"), 1u) << log;
  m = metrics();
  EXPECT_GE(metric(m, "bpfmgr_instance_apply_failures_total{instance_name=\"egress\"}")
                .value_or(0), 3) << m;
  // Retried on the 5 s timer only: its own staging's pin-root events are
  // no reason to retry (they once made it loop at ~30 applies a second).
  EXPECT_LE(metric(m, "bpfmgr_instance_apply_failures_total{instance_name=\"egress\"}")
                .value_or(0), 5) << m;
  // The cgroup appears: the retry (every 5 s while failing) attaches there.
  ASSERT_EQ(::mkdir(cg.c_str(), 0755), 0);
  ASSERT_TRUE(wait_until([&] { return http_get(port, "/readyz")->status == 200; }, 20s))
      << serve.log() << http_get(port, "/readyz")->body;
  EXPECT_NE(serve.log().find("egress: applied after"), std::string::npos) << serve.log();
  sj = json::parse(run_bpfmgr({"status", "--pin-root", root.path(), "--json"}).out, nullptr,
                   false);
  EXPECT_EQ(sj["serve"].value("ready", false), true) << sj;
  EXPECT_EQ(sj["serve"].value("problems", json::array()).size(), 0u) << sj;
  check = run_bpfmgr({"status", "--pin-root", root.path(), "--check"});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  m = metrics();
  EXPECT_EQ(metric(m, "bpfmgr_instance_up{instance_name=\"egress\"}"), 1) << m;
  EXPECT_EQ(metric(m, "bpfmgr_instance_failing{instance_name=\"egress\"}"), 0);
  EXPECT_EQ(metric(m, "bpfmgr_ready"), 1);
  auto r = run({"bpftool", "cgroup", "show", cg});
  EXPECT_NE(r.out.find("egress"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(serve.stop(SIGTERM), 0);
  // No serve, no serve state (its record went with it).
  sj = json::parse(run_bpfmgr({"status", "--pin-root", root.path(), "--json"}).out, nullptr,
                   false);
  EXPECT_FALSE(sj.contains("serve")) << sj;
  run_bpfmgr({"unpin", "--pin-root", root.path(), "--quiet"});
}

TEST(Serve, LoadKeepsAllOrNothingWhenACgroupIsMissing) {
  PinRoot root;
  auto cg = cgroup2_root_for_tests() + "/" + unique_name("bpfmgr-serve-none");
  auto r = run_bpfmgr({"load", write_temp_file(count_and_cgroup(root, cg))});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(root.path() + "/count"));
}

TEST(Serve, ReadyzIsReadyOnlyWhenEveryInstanceIsUpAndHealthzStaysLive) {
  PinRoot root;
  TempDir dir;
  auto manifest = dir.path + "/manifest.toml";
  std::ofstream(manifest) << manifest_text(root, {"count"});
  auto s = start_serve(manifest, {"--interval", "300"});
  auto ready = http_get(s.port, "/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  EXPECT_EQ(ready->body, "ready: 1 instance(s) up\n");
  // An invalid edit: what runs is kept, live, but not ready (not applied).
  replace_file(manifest, "pin_root = 3\n");
  ASSERT_TRUE(wait_until([&] { return http_get(s.port, "/readyz")->status == 503; }, 10s));
  EXPECT_NE(http_get(s.port, "/readyz")->body.find("has errors"), std::string::npos);
  EXPECT_EQ(http_get(s.port, "/healthz")->status, 200);
  replace_file(manifest, manifest_text(root, {"count"}));
  ASSERT_TRUE(wait_until([&] { return http_get(s.port, "/readyz")->status == 200; }, 10s));
}

TEST(Serve, RemovedPinIsRepairedWithinASecondWithoutWaitingForTheInterval) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  auto s = start_serve(manifest, {"--interval", "300"});
  auto links = root.path() + "/count/links";
  std::vector<double> took;
  for (int round = 1; round <= 5; ++round) {
    ASSERT_FALSE(fs::is_empty(links));
    auto t0 = std::chrono::steady_clock::now();
    for (auto& e : fs::directory_iterator(links)) fs::remove(e.path());
    // Repaired: the link pinned again and the hook live (instance up).
    ASSERT_TRUE(wait_until(
        [&] {
          std::error_code ec;
          return !fs::is_empty(links, ec) && drift_free(root.path(), "count");
        },
        10s))
        << s.process->log();
    took.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(took.begin(), took.end());
  std::printf("pin removal -> repair: median %.3f s, max %.3f s (5 removals, interval 300 s)\n",
              took[2], took.back());
  EXPECT_LT(took.back(), 1.0);
  auto m = s.metrics();
  EXPECT_EQ(metric(m, "bpfmgr_repairs_total{instance_name=\"count\",reason=\"link_pin_missing\"}"),
            5) << m;
  EXPECT_GE(metric(m, "bpfmgr_reconciles_total{trigger=\"drift\"}").value_or(0), 5);
  EXPECT_EQ(metric(m, "bpfmgr_reconciles_total{trigger=\"interval\"}"), 0);
  // The whole instance removed (`rm -r`): back within a second too.
  auto t0 = std::chrono::steady_clock::now();
  fs::remove_all(root.path() + "/count");
  ASSERT_TRUE(wait_until([&] { return drift_free(root.path(), "count"); }, 10s));
  double whole = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("instance removed -> repair: %.3f s\n", whole);
  EXPECT_LT(whole, 1.0);
  auto before = getppid_calls(root.path(), "count");
  call_getppid(300);
  EXPECT_GE(getppid_calls(root.path(), "count"), before + 300);
}

// Connects to 127.0.0.1:port; -1 on failure.
int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(Serve, HundredSlowClientsNeitherStallProbesNorReconciling) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  auto s = start_serve(manifest, {"--interval", "300"});
  // 100 clients sending one header line a second, for 12 s.
  std::atomic<bool> done{false};
  std::atomic<int> connected{0}, cut_off{0};
  std::vector<std::thread> slow;
  for (int i = 0; i < 100; ++i)
    slow.emplace_back([&, i] {
      int fd = connect_to(s.port);
      if (fd < 0) return;
      ++connected;
      std::string line = "GET /metrics HTTP/1.1\r\n";
      for (int k = 0; !done; ++k) {
        if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0) {
          ++cut_off;
          break;
        }
        line = "X-Slow-" + std::to_string(i) + ": " + std::to_string(k) + "\r\n";
        for (int t = 0; t < 10 && !done; ++t) std::this_thread::sleep_for(100ms);
      }
      ::close(fd);
    });
  std::this_thread::sleep_for(500ms);
  // Meanwhile: probes every 100 ms, and a pin removed to be repaired.
  std::vector<double> latency;
  auto links = root.path() + "/count/links";
  bool removed = false, repaired = false;
  auto end = std::chrono::steady_clock::now() + 10s;
  int failures = 0;
  while (std::chrono::steady_clock::now() < end) {
    auto t0 = std::chrono::steady_clock::now();
    auto h = http_get(s.port, "/healthz");
    latency.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!h || h->status != 200) ++failures;
    if (!removed && latency.size() == 20) {
      for (auto& e : fs::directory_iterator(links)) fs::remove(e.path());
      removed = true;
    }
    if (removed && !repaired) repaired = drift_free(root.path(), "count");
    std::this_thread::sleep_for(100ms);
  }
  auto m = s.metrics();
  done = true;
  for (auto& t : slow) t.join();
  std::sort(latency.begin(), latency.end());
  std::printf("100 slow clients (%d connected, %d cut off): /healthz %zu probes, "
              "median %.4f s, max %.4f s, %d failed\n",
              connected.load(), cut_off.load(), latency.size(), latency[latency.size() / 2],
              latency.back(), failures);
  EXPECT_EQ(connected, 100);
  EXPECT_EQ(failures, 0);
  EXPECT_LT(latency.back(), 1.0);
  EXPECT_TRUE(repaired) << "reconciling stalled under the slow clients";
  EXPECT_FALSE(m.empty()) << "/metrics did not answer";
  // Each slow client was cut off at the 5 s request deadline.
  EXPECT_EQ(cut_off, 100);
  EXPECT_TRUE(s.process->running());
}

TEST(Serve, SecondServeOnTheSameAddressExitsOneNamingIt) {
  PinRoot root, other_root;
  auto s = start_serve(write_temp_file(manifest_text(root, {"count"})), {"--interval", "300"});
  auto address = "127.0.0.1:" + std::to_string(s.port);
  auto r = run_bpfmgr({"serve", write_temp_file(manifest_text(other_root, {"count"})),
                       "--metrics-address", address});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cannot listen on " + address), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("in use"), std::string::npos) << r.err;
  // It failed before loading anything.
  EXPECT_FALSE(fs::exists(other_root.path() + "/count"));
  EXPECT_EQ(http_get(s.port, "/healthz")->status, 200);
}

TEST(Serve, NonLoopbackAddressIsWarnedAbout) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  int port = free_port();
  ServeProcess serve({manifest, "--metrics-address", "0.0.0.0:" + std::to_string(port),
                      "--interval", "300"});
  ASSERT_TRUE(wait_until([&] { return http_get(port, "/healthz").has_value(); }, 30s))
      << serve.log();
  auto log = serve.log();
  EXPECT_NE(log.find("warning: 0.0.0.0:" + std::to_string(port) +
                     " is reachable from other hosts"),
            std::string::npos)
      << log;
}

TEST(Serve, IntervalOutsideItsBoundsIsRefused) {
  PinRoot root;
  auto manifest = write_temp_file(manifest_text(root, {"count"}));
  for (std::string bad : {"nan", "inf", "-inf", "1e300", "1e-300", "0.5", "0", "-3", "86401",
                          "30s"}) {
    auto r = run_bpfmgr({"serve", manifest, "--metrics-address", "none", "--interval", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--interval"), std::string::npos) << bad << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(root.path() + "/count"));
  auto help = run_bpfmgr({"serve", "--help"});
  EXPECT_NE(help.out.find("1 to 86400"), std::string::npos) << help.out;
}

TEST(Serve, MetricsFollowPrometheusConventions) {
  PinRoot root;
  auto s = start_serve(write_temp_file(manifest_text(root, {"count"})), {"--interval", "300"});
  auto m = s.metrics();
  // Bucket bounds as written, so le="0.05" matches.
  EXPECT_NE(m.find("bpfmgr_apply_duration_seconds_bucket{le=\"0.05\"}"), std::string::npos) << m;
  EXPECT_EQ(m.find("0.05000000"), std::string::npos);
  for (auto name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                    "process_open_fds", "process_start_time_seconds", "process_max_fds"})
    EXPECT_TRUE(metric(m, name)) << name << "\n" << m;
  EXPECT_GT(*metric(m, "process_resident_memory_bytes"), 1e6);
  double start = *metric(m, "process_start_time_seconds");
  double now = std::chrono::duration<double>(
                   std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LT(now - start, 120);
  EXPECT_GE(now - start, 0);
  EXPECT_EQ(metric(m, "bpfmgr_repair_failures_total{instance_name=\"count\","
                      "reason=\"link_pin_missing\"}"), 0);
  EXPECT_EQ(metric(m, "bpfmgr_ready"), 1);
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
