// Plugin trust (issue #8 item 1): bpfmgr, run as root, loads no library
// that someone else could have written, swapped or slipped onto its search
// path. Each refusal is checked twice: the message and exit code, and that
// the refused library's constructor never ran (the `testmarker` plugin
// writes $BPFMGR_TEST_MARKER when loaded).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
constexpr uid_t kNobody = 65534;

// A directory of its own under /tmp, removed with everything in it.
struct TempDir {
  std::string path;
  explicit TempDir(mode_t mode = 0755) {
    char tmpl[] = "/tmp/bpfmgr-trust-XXXXXX";
    path = ::mkdtemp(tmpl);
    ::chmod(path.c_str(), mode);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// The file a loaded testmarker writes; removed when the test process ends,
// whatever its last load left.
struct MarkerFile {
  std::string path = "/tmp/bpfmgr-tests-marker-" + std::to_string(::getpid());
  ~MarkerFile() { ::unlink(path.c_str()); }
};
const std::string& marker_path() {
  static const MarkerFile marker;
  return marker.path;
}

// True when a testmarker library was loaded since the last reset.
bool plugin_code_ran() { return fs::exists(marker_path()); }
void reset_marker() {
  ::unlink(marker_path().c_str());
  ::setenv("BPFMGR_TEST_MARKER", marker_path().c_str(), 1);
}

// Copies the testmarker plugin into `dir` as bpfmgr-NAME.so (mode 0755).
std::string install_marker(const std::string& dir, const std::string& name = "testmarker") {
  auto to = dir + "/bpfmgr-" + name + ".so";
  fs::copy_file(test_plugin_dir() + "/bpfmgr-testmarker.so", to,
                fs::copy_options::overwrite_existing);
  ::chmod(to.c_str(), 0755);
  return to;
}

std::string marker_manifest(const std::string& plugin_dir, const std::string& plugin,
                            const std::string& extra = "") {
  return "plugin_path = [\"" + plugin_dir + "\"]\n[[instance]]\nname = \"m\"\nplugin = \"" +
         plugin + "\"\n" + extra;
}

CommandResult validate(const std::string& manifest_text) {
  return run_bpfmgr({"validate", write_temp_file(manifest_text)});
}

TEST(PluginTrust, AcceptsRootsFileAndRunsIt) {
  // The control for every refusal below: the same file, kept as root keeps
  // it, loads, and the marker proves its code runs when loaded.
  TempDir dir;
  install_marker(dir.path);
  reset_marker();
  auto r = validate(marker_manifest(dir.path, "testmarker"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(plugin_code_ran());
}

TEST(PluginTrust, RefusesAPluginInAWorldWritableDirectory) {
  TempDir dir(0777);  // not sticky: anyone may replace the file
  install_marker(dir.path);
  reset_marker();
  auto r = validate(marker_manifest(dir.path, "testmarker"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("directory " + dir.path + " is writable by everyone"),
            std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran()) << "validate ran code from a world-writable directory";

  // `plugins` lists it as refused, exits 2, and runs nothing either.
  auto p = run_bpfmgr({"plugins", "--path", dir.path, "--json"});
  EXPECT_EQ(p.exit_code, 2) << p.err;
  bool listed = false;
  auto listing = json::parse(p.out);
  for (auto& pl : listing["plugins"])
    if (pl["name"] == "testmarker") {
      listed = true;
      EXPECT_EQ(pl.value("refused", false), true) << pl.dump();
    }
  EXPECT_TRUE(listed) << p.out;
  EXPECT_FALSE(plugin_code_ran());
}

TEST(PluginTrust, RefusesAFileOwnedByAnotherUserOrWritableByOthers) {
  TempDir dir;
  auto so = install_marker(dir.path);
  ASSERT_EQ(::chown(so.c_str(), kNobody, kNobody), 0);
  reset_marker();
  auto r = validate(marker_manifest(dir.path, "testmarker"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("owned by uid 65534, not by root"), std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran());

  ASSERT_EQ(::chown(so.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(so.c_str(), 0775), 0);
  r = validate(marker_manifest(dir.path, "testmarker"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("writable by its group"), std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran());
}

TEST(PluginTrust, RefusesADirectoryOfAnotherUserAboveThePlugin) {
  TempDir top;
  auto sub = top.path + "/sub";
  ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
  install_marker(sub);
  ASSERT_EQ(::chown(top.path.c_str(), kNobody, kNobody), 0);  // may rename sub
  reset_marker();
  auto r = validate(marker_manifest(sub, "testmarker"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("directory " + top.path + " is owned by uid 65534"),
            std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran());
}

TEST(PluginTrust, FollowsASymlinkOnlyToCheckWhereItLeads) {
  // A link from a trusted place into a world-writable directory is judged
  // by where it leads.
  TempDir good, bad(0777);
  auto so = install_marker(bad.path);
  fs::create_symlink(so, good.path + "/bpfmgr-testmarker.so");
  reset_marker();
  auto r = validate(marker_manifest(good.path, "testmarker"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("writable by everyone"), std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran());
}

TEST(PluginTrust, RelativePluginPathMayNotLeaveTheManifestsDirectory) {
  TempDir base, elsewhere;
  auto so = install_marker(elsewhere.path);
  auto inside = base.path + "/plugins";
  ASSERT_EQ(::mkdir(inside.c_str(), 0755), 0);
  install_marker(inside);
  reset_marker();
  auto escape = "../" + fs::path(elsewhere.path).filename().string() + "/bpfmgr-testmarker.so";
  auto manifest = base.path + "/m.toml";
  std::ofstream(manifest) << "[[instance]]\nname = \"m\"\nplugin = \"" << escape << "\"\n";
  auto r = run_bpfmgr({"validate", manifest});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("leaves the manifest's directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("m.toml:3:"), std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran());

  std::ofstream(manifest, std::ios::trunc)
      << "[[instance]]\nname = \"m\"\nplugin = \"plugins/bpfmgr-testmarker.so\"\n";
  r = run_bpfmgr({"validate", manifest});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(plugin_code_ran());
}

TEST(PluginTrust, EnvironmentPathCannotShadowAnInstalledPlugin) {
  // bpfmgr-sockops.so exists beside the binary (build/lib/bpfmgr/plugins);
  // a directory on BPFMGR_PLUGIN_PATH offering another one is refused.
  if (!fs::exists(plugin_dir() + "/bpfmgr-sockops.so")) GTEST_SKIP() << "sockops not built";
  TempDir env_dir;
  install_marker(env_dir.path, "sockops");
  reset_marker();
  auto manifest = write_temp_file("[[instance]]\nname = \"s\"\nplugin = \"sockops\"\n");
  ::setenv("BPFMGR_PLUGIN_PATH", env_dir.path.c_str(), 1);
  auto r = run({bpfmgr_binary(), "validate", manifest});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("in BPFMGR_PLUGIN_PATH (" + env_dir.path + "/bpfmgr-sockops.so)"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("would replace the installed " + plugin_dir() + "/bpfmgr-sockops.so"),
            std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran());
}

TEST(PluginTrust, ManifestSha256PinsThePluginFile) {
  TempDir dir;
  auto so = install_marker(dir.path);
  auto sum = run({"sha256sum", so});
  ASSERT_EQ(sum.exit_code, 0);
  auto good = sum.out.substr(0, 64);
  auto bad = std::string(64, '0');
  reset_marker();
  auto r = validate(marker_manifest(dir.path, "testmarker", "sha256 = \"" + bad + "\"\n"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("its content changed (sha256 " + good + ", expected " + bad),
            std::string::npos) << r.err;
  EXPECT_FALSE(plugin_code_ran());

  r = validate(marker_manifest(dir.path, "testmarker", "sha256 = \"abc\"\n"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(":5:10: error: sha256 must be 64 hex digits"), std::string::npos) << r.err;

  r = validate(marker_manifest(dir.path, "testmarker", "sha256 = \"" + good + "\"\n"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(plugin_code_ran());
}

TEST(PluginTrust, APluginChangedSinceLoadIsNotRunButUnpinStillRemovesEverything) {
  auto before = KernelObjects::settled({"count_getppid", "testmark.rodata"});
  PinRoot root;
  TempDir dir;
  auto so = install_marker(dir.path);
  auto manifest = write_temp_file("pin_root = \"" + root.path() + "\"\n" +
                                  marker_manifest(dir.path, "testmarker") +
                                  "[instance.options]\ntgid = " +
                                  std::to_string(::getpid()) + "\n");
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  auto st = run_bpfmgr({"status", "--json", "--pin-root", root.path()});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  auto recorded = json::parse(st.out)["instances"][0]["plugin_sha256"].get<std::string>();
  EXPECT_EQ(recorded, run({"sha256sum", so}).out.substr(0, 64));

  // Root's file, rewritten in place (as an upgrade or an intruder with
  // root's file would): still trusted by owner and mode, but not the code
  // the instance was loaded with.
  std::ofstream(so, std::ios::app) << "changed";
  reset_marker();
  st = run_bpfmgr({"status", "--json", "--pin-root", root.path()});
  EXPECT_EQ(st.exit_code, 2) << st.err;
  auto inst = json::parse(st.out)["instances"][0];
  EXPECT_NE(inst["status_error"].get<std::string>().find("content changed"), std::string::npos)
      << inst.dump();
  EXPECT_TRUE(inst["programs"][0].contains("id")) << "kernel facts are still shown";
  EXPECT_FALSE(plugin_code_ran()) << "status ran the changed plugin";

  auto ev = run_bpfmgr({"events", "m", "--pin-root", root.path(), "--duration", "1"});
  EXPECT_EQ(ev.exit_code, 2);
  EXPECT_NE(ev.err.find("content changed"), std::string::npos) << ev.err;
  EXPECT_FALSE(plugin_code_ran()) << "events ran the changed plugin";

  auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(u.exit_code, 0) << u.err;
  EXPECT_NE(u.err.find("before_unpin skipped"), std::string::npos) << u.err;
  EXPECT_FALSE(plugin_code_ran()) << "unpin ran the changed plugin";
  EXPECT_TRUE(pins_under(root.path()).empty());
  EXPECT_EQ(before.diff_settled({"count_getppid", "testmark.rodata"}), "");
}

// Seconds since the file's inode last changed.
double ctime_age(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return double(now.tv_sec - st.st_ctim.tv_sec) + (now.tv_nsec - st.st_ctim.tv_nsec) / 1e9;
}

// A reload of an unchanged manifest is told from the state records and the
// plugin file's identity: no plugin code is loaded. A file changed within
// the last 2 s cannot vouch for its bytes by its identity (a write in the
// same ctime tick leaves it as it was), so it is loaded again until it is
// older; anything changed goes the whole way.
TEST(PluginTrust, AnUnchangedReloadLoadsNoPluginCode) {
  PinRoot root;
  TempDir dir;
  auto so = install_marker(dir.path);
  auto manifest_with = [&](int tgid) {
    return write_temp_file("pin_root = \"" + root.path() + "\"\n" +
                           marker_manifest(dir.path, "testmarker") +
                           "[instance.options]\ntgid = " + std::to_string(tgid) + "\n");
  };
  auto manifest = manifest_with(::getpid());
  auto load = [&](const std::string& m) {
    reset_marker();
    auto r = run_bpfmgr({"load", m});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r;
  };
  ASSERT_EQ(load(manifest).exit_code, 0);
  EXPECT_TRUE(plugin_code_ran());

  bool fresh = ctime_age(so) < 1.5;
  auto r = load(manifest);
  EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << r.out;
  if (fresh) {
    EXPECT_TRUE(plugin_code_ran()) << "a file changed just now was trusted by its identity";
  }

  // Older than the window: the next reload resolves once more and records
  // the fingerprint; from then on a reload runs no plugin code.
  while (ctime_age(so) < 2.2) ::usleep(100'000);
  r = load(manifest);
  EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << r.out;
  r = load(manifest);
  EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << r.out;
  EXPECT_FALSE(plugin_code_ran()) << "an unchanged reload loaded the plugin";

  // Another option value: resolved and updated.
  auto other = manifest_with(::getpid() + 1);
  r = load(other);
  EXPECT_NE(r.out.find("updated: m"), std::string::npos) << r.out;
  EXPECT_TRUE(plugin_code_ran());
  r = load(other);
  EXPECT_FALSE(plugin_code_ran()) << r.out;

  // The kernel no longer runs what the record says: repaired.
  fs::remove(root.path() + "/m/links/count_getppid");
  r = load(other);
  EXPECT_NE(r.err.find("repaired: m:"), std::string::npos) << r.err;
  EXPECT_TRUE(plugin_code_ran());
  EXPECT_EQ(pins_under(root.path() + "/m/links").size(), 1u);

  // The plugin's hook runs at unpin (testmarker has one).
  reset_marker();
  auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(u.exit_code, 0) << u.err;
  EXPECT_TRUE(plugin_code_ran());
  EXPECT_TRUE(pins_under(root.path()).empty());
}

// unpin loads a plugin only to run its before_unpin hook: a plugin without
// one is not even opened, so its file's state does not matter.
TEST(PluginTrust, UnpinLoadsAPluginOnlyForItsBeforeUnpinHook) {
  PinRoot root;
  TempDir dir;
  auto hooked = install_marker(dir.path);
  auto plain = dir.path + "/bpfmgr-testcount.so";
  fs::copy_file(test_plugin_dir() + "/bpfmgr-testcount.so", plain);
  ::chmod(plain.c_str(), 0755);
  auto tgid = "[instance.options]\ntgid = " + std::to_string(::getpid()) + "\n";
  auto manifest = write_temp_file(
      "pin_root = \"" + root.path() + "\"\nplugin_path = [\"" + dir.path + "\"]\n" +
      "[[instance]]\nname = \"hooked\"\nplugin = \"testmarker\"\n" + tgid +
      "[[instance]]\nname = \"plain\"\nplugin = \"testcount\"\n" + tgid);
  auto l = run_bpfmgr({"load", manifest});
  ASSERT_EQ(l.exit_code, 0) << l.err;
  // Both files become writable by others: neither may run now.
  ASSERT_EQ(::chmod(hooked.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(plain.c_str(), 0777), 0);
  reset_marker();
  auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(u.exit_code, 0) << u.err;
  EXPECT_NE(u.err.find("hooked: before_unpin skipped: refusing"), std::string::npos) << u.err;
  EXPECT_EQ(u.err.find("plain:"), std::string::npos) << "tried to load a plugin without the hook:\n"
                                                     << u.err;
  EXPECT_FALSE(plugin_code_ran());
  EXPECT_TRUE(pins_under(root.path()).empty());
}

// ------------------------------------------------- the dependency closure

// The build tree's directory the `testdep` plugin's RUNPATH names, and
// the library it needs there; restored whatever the test does.
struct DepDir {
  std::string dir = build_dir() + "/lib/bpfmgr/test-deps";
  std::string lib = dir + "/libbpfmgr-testdep.so";
  std::string marker = "/tmp/bpfmgr-tests-dep-marker-" + std::to_string(::getpid());
  DepDir() {
    ::unlink(marker.c_str());
    ::setenv("BPFMGR_TEST_DEP_MARKER", marker.c_str(), 1);
  }
  ~DepDir() {
    ::chmod(dir.c_str(), 0755);
    if (!fs::exists(lib) && fs::exists(lib + ".away")) fs::rename(lib + ".away", lib);
    ::unlink(marker.c_str());
  }
  bool dep_ran() const { return fs::exists(marker); }
};

std::string testdep_manifest() {
  return marker_manifest(test_plugin_dir(), "testdep");
}

TEST(PluginTrust, DependencyThroughRunpathIntoAWorldWritableDirIsRefused) {
  DepDir dep;
  // Control: the same plugin with its dependency's directory kept as root
  // keeps it loads, and the dependency's constructor runs.
  ASSERT_EQ(::chmod(dep.dir.c_str(), 0755), 0);
  auto ok = validate(testdep_manifest());
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  ASSERT_TRUE(dep.dep_ran()) << "the control must load the dependency";
  ::unlink(dep.marker.c_str());

  ASSERT_EQ(::chmod(dep.dir.c_str(), 0777), 0);
  auto r = validate(testdep_manifest());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("would search " + dep.dir), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("libbpfmgr-testdep.so"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("writable by everyone"), std::string::npos) << r.err;
  EXPECT_FALSE(dep.dep_ran()) << "the untrusted dependency's constructor ran";
  // `bpfmgr plugins` lists what it finds the same way.
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  auto p = run_bpfmgr({"plugins"});
  ::unsetenv("BPFMGR_PLUGIN_PATH");
  EXPECT_FALSE(dep.dep_ran()) << "`bpfmgr plugins` ran the untrusted dependency: " << p.out
                              << p.err;
}

TEST(PluginTrust, ALibraryBpfmgrRunsIsNeverSearchedFor) {
  // testrunpath's RUNPATH is testdep's directory, made writable by everyone
  // and holding a planted libbpf.so.1 (testdep's library: it leaves the
  // marker when loaded). The loader takes libbpf.so.1 from what bpfmgr
  // already runs and never searches there, so the plugin is not refused
  // and the planted file never runs.
  DepDir dep;
  auto planted = dep.dir + "/libbpf.so.1";
  struct Unplant {
    std::string path;
    ~Unplant() { ::unlink(path.c_str()); }
  } unplant{planted};
  fs::copy_file(dep.lib, planted, fs::copy_options::overwrite_existing);
  ASSERT_EQ(::chmod(dep.dir.c_str(), 0777), 0);
  auto r = validate(marker_manifest(test_plugin_dir(), "testrunpath"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(dep.dep_ran()) << "the planted libbpf.so.1 ran";
  // Control: a plugin that needs a library from there is still refused.
  auto refused = validate(testdep_manifest());
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_FALSE(dep.dep_ran());
}

TEST(PluginTrust, MissingDependencyIsNamedWithWhereItWasSearched) {
  DepDir dep;
  ASSERT_EQ(::chmod(dep.dir.c_str(), 0755), 0);
  fs::rename(dep.lib, dep.lib + ".away");
  auto r = validate(testdep_manifest());
  fs::rename(dep.lib + ".away", dep.lib);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("needs libbpfmgr-testdep.so"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not found; searched: " + dep.dir), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Bad file descriptor"), std::string::npos) << r.err;
}

// The walk opens each library through its search directory and follows a
// link only to a name in that directory (libfoo.so.1 -> libfoo.so.1.2):
// the file reached is judged like the plugin, and a link elsewhere takes
// the full walk of its target's directories.
TEST(PluginTrust, DependencyLinksLeadOnlyToFilesAndDirectoriesRootAloneCanChange) {
  DepDir dep;
  ASSERT_EQ(::chmod(dep.dir.c_str(), 0755), 0);
  const auto real = dep.lib + ".1.0";
  TempDir elsewhere;
  struct Restore {
    const DepDir& dep;
    std::string real;
    ~Restore() {
      if (!fs::exists(real)) return;  // never moved: nothing to undo
      ::unlink(dep.lib.c_str());
      ::chmod(real.c_str(), 0755);
      ::rename(real.c_str(), dep.lib.c_str());
    }
  } restore{dep, real};
  ASSERT_EQ(::rename(dep.lib.c_str(), real.c_str()), 0);
  ASSERT_EQ(::symlink(fs::path(real).filename().c_str(), dep.lib.c_str()), 0);

  // Control: through a link in the same directory, it loads and runs.
  auto ok = validate(testdep_manifest());
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  ASSERT_TRUE(dep.dep_ran()) << "the control must load the dependency";
  ::unlink(dep.marker.c_str());

  // The file the link names, writable by everyone.
  ASSERT_EQ(::chmod(real.c_str(), 0777), 0);
  auto r = validate(testdep_manifest());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(real + ": the file is writable by everyone"), std::string::npos)
      << r.err;
  EXPECT_FALSE(dep.dep_ran()) << "a world-writable dependency ran";
  ASSERT_EQ(::chmod(real.c_str(), 0755), 0);

  // A link out of the directory, into one everyone may write to.
  ASSERT_EQ(::chmod(elsewhere.path.c_str(), 0777), 0);
  auto moved = elsewhere.path + "/libbpfmgr-testdep.so";
  fs::copy_file(real, moved);
  ASSERT_EQ(::unlink(dep.lib.c_str()), 0);
  ASSERT_EQ(::symlink(moved.c_str(), dep.lib.c_str()), 0);
  r = validate(testdep_manifest());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("directory " + elsewhere.path + " is writable by everyone"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(dep.dep_ran()) << "a dependency in a world-writable directory ran";
  ::unlink(dep.lib.c_str());
  ASSERT_EQ(::symlink(fs::path(real).filename().c_str(), dep.lib.c_str()), 0);
}

TEST(PluginTrust, LoaderEnvironmentIsRefusedWhenRunningAsRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  TempDir dir;
  install_marker(dir.path);
  for (const char* var : {"LD_LIBRARY_PATH", "LD_PRELOAD"}) {
    reset_marker();
    // An empty, harmless value: the refusal is about the variable being
    // set at all while root loads plugins.
    auto r = run({"env", std::string(var) + "=" + dir.path + "/nothing-here", bpfmgr_binary(),
                  "validate", write_temp_file(marker_manifest(dir.path, "testmarker"))});
    EXPECT_EQ(r.exit_code, 2) << var << ": " << r.err;
    EXPECT_NE(r.err.find(std::string("refusing to load plugins as root with ") + var),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(plugin_code_ran()) << var;
  }
}

}  // namespace
}  // namespace bpfmgr::test
