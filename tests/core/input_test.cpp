// Bounded, honest input handling (issue #8 items 7, 9, 12, 14): manifests
// that are not regular files or too big, values too long to echo, an empty
// plugin name, `status`/`unpin` without privileges, and `bpfmgr events`
// when its instance goes away or /run cannot hold its lock.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string counter_manifest(const std::string& pin_root) {
  return "pin_root = \"" + pin_root + "\"\nplugin_path = [\"" + test_plugin_dir() +
         "\"]\n[[instance]]\nname = \"c\"\nplugin = \"testcount\"\n"
         "[instance.options]\ntgid = " + std::to_string(::getpid()) + "\n";
}

// `bpfmgr ARGS` under coreutils' timeout: a hang fails the test instead of
// the suite (exit 124).
CommandResult bpfmgr_within(int seconds, const std::vector<std::string>& args) {
  std::vector<std::string> argv{"timeout", std::to_string(seconds), bpfmgr_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  return run(argv);
}

TEST(Input, EmptyPluginNameIsAnErrorNotACrash) {
  auto m = write_temp_file("[[instance]]\nname = \"a\"\nplugin = \"\"\n");
  for (auto cmd : {"validate", "load"}) {
    auto r = bpfmgr_within(20, {cmd, m});
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find(":3:10: error: plugin of instance 'a' is empty"), std::string::npos)
        << r.err;
  }
}

TEST(Input, AFifoManifestIsRefusedAtOnce) {
  auto path = write_temp_file("", ".fifo");
  ::unlink(path.c_str());
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  for (auto cmd : {"validate", "load"}) {
    auto r = bpfmgr_within(10, {cmd, path});
    EXPECT_EQ(r.exit_code, 2) << cmd << " (124: it hung): " << r.err;
    EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
  }
}

TEST(Input, AManifestLinkedToADeviceIsRefused) {
  auto path = write_temp_file("", ".toml");
  ::unlink(path.c_str());
  fs::create_symlink("/dev/zero", path);
  auto r = bpfmgr_within(10, {"validate", path});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
}

TEST(Input, ManifestsAreLimitedToOneMebibyte) {
  std::string big = "# " + std::string(1 << 20, 'x') + "\n";
  auto r = bpfmgr_within(10, {"validate", write_temp_file(big)});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("manifests are limited to 1048576 bytes"), std::string::npos) << r.err;
}

TEST(Input, LongValuesAreCutInMessages) {
  // 900 KB values in three places a message quotes: an option value that
  // is not one of the choices, an unknown option's name, an instance name.
  std::string huge(900 * 1024, 'v');
  auto m = write_temp_file("[[instance]]\nname = \"a\"\nplugin = \"testcount\"\n"
                           "[instance.options]\nmode = \"" + huge + "\"\n");
  auto r = bpfmgr_within(20, {"validate", m});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_LT(r.err.size(), 4096u) << "the value was echoed";
  EXPECT_NE(r.err.find("more bytes"), std::string::npos) << r.err.substr(0, 500);

  m = write_temp_file("[[instance]]\nname = \"" + huge + "\"\nplugin = \"testcount\"\n"
                      "[instance.options]\n" + huge + " = 1\n");
  r = bpfmgr_within(20, {"validate", m});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_LT(r.err.size(), 8192u) << "a value was echoed";
}

TEST(Input, StatusOfAMissingInstanceFails) {
  PinRoot root;
  ASSERT_EQ(run_bpfmgr({"load", write_temp_file(counter_manifest(root.path()))}).exit_code, 0);
  auto r = run_bpfmgr({"status", "--pin-root", root.path(), "nonexistent"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no instance 'nonexistent' under " + root.path()), std::string::npos)
      << r.err;
  r = run_bpfmgr({"status", "--pin-root", root.path(), "c"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(Input, WithoutPrivilegesStatusAndUnpinSayPermissionDenied) {
  PinRoot root;
  ASSERT_EQ(run_bpfmgr({"load", write_temp_file(counter_manifest(root.path()))}).exit_code, 0);
  for (auto cmd : {"status", "unpin"}) {
    auto r = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  bpfmgr_binary(), cmd, "--pin-root", root.path()});
    EXPECT_EQ(r.exit_code, 1) << cmd << ": " << r.out << r.err;
    EXPECT_NE(r.err.find("permission denied"), std::string::npos) << cmd << ": " << r.err;
    EXPECT_EQ(r.out.find("no instances"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("nothing"), std::string::npos) << r.out;
  }
  // The instance is untouched.
  EXPECT_TRUE(fs::exists(root.path() + "/c/state"));
}

// ------------------------------------------------- options validate refuses

bool first_party_built() {
  for (auto p : {"sockops", "probes", "tcpint"})
    if (!fs::exists(plugin_dir() + "/bpfmgr-" + std::string(p) + ".so")) return false;
  return true;
}

// validate of one instance of `plugin` with `options`; its diagnostics.
CommandResult validate_options(const std::string& plugin, const std::string& options) {
  auto m = write_temp_file("[[instance]]\nname = \"i\"\nplugin = \"" + plugin +
                           "\"\n[instance.options]\n" + options);
  return run_bpfmgr({"validate", m});
}

void expect_refused(const std::string& plugin, const std::string& options,
                    const std::string& where, const std::string& words) {
  auto r = validate_options(plugin, options);
  EXPECT_EQ(r.exit_code, 2) << plugin << " " << options << ": " << r.err;
  EXPECT_NE(r.err.find(where), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(words), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("validate() failed"), std::string::npos) << r.err;
}

TEST(Options, CgroupPathsMustNameACgroupV2Directory) {
  if (!first_party_built()) GTEST_SKIP() << "first-party plugins not built";
  ScopedCgroup cg;
  // Line 5 is the first option line; column 1 is its key.
  expect_refused("sockops", "cgroup = \"x\\u0000y\"\n", ":5:10:", "contains a NUL byte");
  expect_refused("sockops", "cgroup = \"" + cg.path() + "/sub/..\"\n", ":5:1:",
                 "'..' is not allowed in a cgroup path");
  expect_refused("probes", "cgroups = [\"../..\"]\n", ":5:1:",
                 "'..' is not allowed in a cgroup path");
  expect_refused("probes", "cgroups = [\"" + cg.path() + "/cgroup.procs\"]\n", ":5:1:",
                 "cgroup.procs is not a directory");
  expect_refused("tcpint", "cgroup = \"no-such-cgroup-here\"\n", ":5:1:",
                 "No such file or directory (create it before loading)");
  expect_refused("tcpint", "cgroup = \"a\\u0000\"\n", ":5:10:", "contains a NUL byte");
  // The same options with a real cgroup pass.
  auto ok = validate_options("sockops", "cgroup = \"" + cg.path() + "\"\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  ok = validate_options("probes", "cgroups = [\"" + cg.path() + "\"]\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST(Options, EmptyListsThatWouldDoNothingAreRefused) {
  if (!first_party_built()) GTEST_SKIP() << "first-party plugins not built";
  expect_refused("probes", "kinds = []\n", ":5:1:", "no kind listed");
  expect_refused("tcpint", "segments = []\n", ":5:1:", "no segment listed");
}

TEST(Options, OutOfRangeCidrPrefixesAreNamedNotAStolFailure) {
  if (!first_party_built()) GTEST_SKIP() << "first-party plugins not built";
  expect_refused("sockops", "cidrs = [\"10.0.0.0/99999999999999999999\"]\n", ":5:1:",
                 "is not an IPv4/IPv6 address or CIDR");
  expect_refused("tcpint", "cidrs = [\"10.0.0.0/99999999999999999999\"]\n", ":5:1:",
                 "is not a number");
  expect_refused("sockops", "cidrs = [\"10.0.0.0/33\"]\n", ":5:1:",
                 "is not an IPv4/IPv6 address or CIDR");
}

TEST(Options, ListsTooBigForTheStateRecordFailValidateNotLoad) {
  if (!first_party_built()) GTEST_SKIP() << "first-party plugins not built";
  std::string ports = "ports = [";
  for (int p = 1; p <= 20000; ++p) ports += std::to_string(p) + (p < 20000 ? "," : "]\n");
  expect_refused("probes", ports, ":4:1:", "bytes in its state record; at most 32768 fit");
}

// ---------------------------------------------------------------- verifier

TEST(Verifier, ALongRejectionLogStillShowsTheReasonAndTheSourceLine) {
  // testlonglog's program walks ~1200 instructions before a bad read: its
  // log is ~140 KB, far past the 8 KiB one libbpf message once got.
  PinRoot root;
  auto log_file = write_temp_file("", ".log");
  auto r = run_bpfmgr({"load", "--verifier-log", log_file,
                       write_temp_file("pin_root = \"" + root.path() + "\"\nplugin_path = [\"" +
                                       test_plugin_dir() + "\"]\n[[instance]]\nname = \"bad\"\n"
                                       "plugin = \"testlonglog\"\n")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("program 'count_getppid' was rejected by the verifier"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("reason:      R6 invalid mem access 'scalar'"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("instruction: 1200: (79) r0 = *(u64 *)(r6 +0)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("source:      return *(volatile __u64 *)(long)sum;"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("testcount.bpf.c:"), std::string::npos) << r.err;

  std::ifstream in(log_file);
  std::string whole((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_GT(whole.size(), 64u * 1024) << "the log file is not the whole log";
  EXPECT_NE(whole.find("\n0: "), std::string::npos) << "the log's first instruction is missing";
  EXPECT_NE(whole.find("R6 invalid mem access 'scalar'\nprocessed "), std::string::npos);

  // Without the option the message says how to get the whole log.
  r = run_bpfmgr({"load", write_temp_file("pin_root = \"" + root.path() + "\"\nplugin_path = [\"" +
                                          test_plugin_dir() + "\"]\n[[instance]]\nname = \"bad\"\n"
                                          "plugin = \"testlonglog\"\n")});
  EXPECT_NE(r.err.find("--verifier-log FILE"), std::string::npos) << r.err;
  EXPECT_LT(r.err.size(), 16u * 1024);
}

// ------------------------------------------------------------------ events

bool probes_built() { return fs::exists(plugin_dir() + "/bpfmgr-probes.so"); }

std::string load_probes(const PinRoot& root) {
  auto r = run_bpfmgr({"load", write_temp_file("pin_root = \"" + root.path() +
                                               "\"\n[[instance]]\nname = \"p\"\n"
                                               "plugin = \"probes\"\n[instance.options]\n"
                                               "ports = [1]\n")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return root.path() + "/p";
}

TEST(Events, StopsWhenItsInstanceIsUnpinned) {
  if (!probes_built()) GTEST_SKIP() << "probes not built";
  PinRoot root;
  load_probes(root);
  auto start = std::chrono::steady_clock::now();
  auto ev = std::async(std::launch::async, [&] {
    return run_bpfmgr({"events", "p", "--pin-root", root.path(), "--duration", "60"});
  });
  std::this_thread::sleep_for(1s);
  ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path(), "p"}).exit_code, 0);
  ASSERT_EQ(ev.wait_for(20s), std::future_status::ready) << "events kept running";
  auto r = ev.get();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("instance 'p' was unpinned"), std::string::npos) << r.err;
}

// Runs `bpfmgr ARGS` in a private mount namespace after `setup` (shell).
CommandResult in_mount_ns(const std::string& setup, const std::vector<std::string>& args) {
  std::string cmd = setup + " && exec \"$0\" \"$@\"";
  std::vector<std::string> argv{"unshare", "-m", "--propagation", "private", "sh", "-c",
                                cmd, bpfmgr_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
  return run(argv);
}

TEST(Events, AReadOnlyRunIsNotAnotherReader) {
  if (!probes_built()) GTEST_SKIP() << "probes not built";
  PinRoot root;
  load_probes(root);
  // An empty read-only /run: the lock directory cannot even be made.
  auto r = in_mount_ns("mount -t tmpfs -o ro none /run",
                       {"events", "p", "--pin-root", root.path(), "--duration", "2"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("another"), std::string::npos) << r.err;
  // /run/bpfmgr exists but /run is read-only: the lock file cannot be made.
  r = in_mount_ns("mount -t tmpfs none /run && mkdir /run/bpfmgr && mount -o remount,ro /run",
                  {"events", "p", "--pin-root", root.path(), "--duration", "2"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cannot create the reader lock"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
}

TEST(Events, TheLockIsTakenOnlyInARootOwnedDirectoryAndNeverThroughALink) {
  if (!probes_built()) GTEST_SKIP() << "probes not built";
  PinRoot root;
  load_probes(root);
  auto r = in_mount_ns("mount -t tmpfs none /run && mkdir -m 0777 /run/bpfmgr",
                       {"events", "p", "--pin-root", root.path(), "--duration", "2"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("writable by nobody else"), std::string::npos) << r.err;

  r = in_mount_ns("mount -t tmpfs none /run && mkdir /run/elsewhere && "
                  "ln -s /run/elsewhere /run/bpfmgr",
                  {"events", "p", "--pin-root", root.path(), "--duration", "2"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("not a link"), std::string::npos) << r.err;

  // A lock file replaced by a link to a file elsewhere: refused, and the
  // target is neither created nor truncated.
  auto st = json::parse(run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
  int id = 0;
  for (auto& m : st["instances"][0]["maps"])
    if (m["name"] == "events") id = m["id"];
  ASSERT_NE(id, 0) << st.dump();
  auto lock = "/run/bpfmgr/events-map-" + std::to_string(id) + ".lock";
  r = in_mount_ns("mount -t tmpfs none /run && mkdir /run/bpfmgr && echo keep > /run/target && "
                  "ln -s /run/target " + lock,
                  {"events", "p", "--pin-root", root.path(), "--duration", "2"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("Too many levels of symbolic links"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace bpfmgr::test
