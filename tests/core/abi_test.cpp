// The plugin ABI against the real kernel: a plugin written in C, a hook that
// throws what is not a std::exception, a plugin that crashes the process in
// attach(). Each through the real bpfmgr binary.
#include <gtest/gtest.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string instance(const std::string& name, const std::string& plugin,
                     const std::string& options = "") {
  return "\n[[instance]]\nname = \"" + name + "\"\nplugin = \"" + plugin +
         "\"\n[instance.options]\ntgid = " + std::to_string(::getpid()) + "\n" +
         options;
}

CommandResult load(const std::string& manifest_text) {
  return run_bpfmgr({"load", write_temp_file(manifest_text)});
}

// Kernel objects of the plugins used here (see loader_test.cpp).
const std::vector<std::string> kOurs = {"count_getppid", "optional_missin", "stats",
                                        "ccount.rodata", "ccount20.rodata", "testthro.rodata",
                                        "testcras.rodata", "testcoun.rodata"};

const json* counter(const json& inst, const std::string& name) {
  for (auto& c : inst["counters"])
    if (c["name"] == name) return &c;
  return nullptr;
}

TEST(Abi, PluginWrittenInPlainCLoadsAndWorks) {
  auto before = KernelObjects::settled(kOurs);
  {
    PinRoot root;
    auto r = load(test_manifest_header(root) + instance("c", "ccount", "label = \"from C\"\n"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (int i = 0; i < 3; ++i) ::getppid();

    auto st = run_bpfmgr({"status", "--json", "--pin-root", root.path()});
    ASSERT_EQ(st.exit_code, 0) << st.err;
    auto inst = json::parse(st.out)["instances"][0];
    EXPECT_EQ(inst["plugin"], "ccount");
    EXPECT_EQ(inst["plugin_version"], "2.0.0");
    auto* calls = counter(inst, "getppid_calls");
    ASSERT_NE(calls, nullptr) << inst.dump(2);
    EXPECT_EQ((*calls)["value"].get<std::uint64_t>(), 3u);
    EXPECT_EQ(inst["details"]["label"], "from C") << inst.dump(2);
    // A 2.1 field, read after checking the table's size: the real pin.
    EXPECT_EQ(inst["details"]["stats_pin"], root.path() + "/c/maps/stats") << inst.dump(2);
    // 2.2 fields: the kernel's release and a typed, labelled sample.
    struct utsname u {};
    ::uname(&u);
    EXPECT_EQ(inst["details"].value("kernel", "?"), u.release) << inst.dump(2);
    ASSERT_EQ(inst["metrics"].size(), 1u) << inst.dump(2);
    EXPECT_EQ(inst["metrics"][0]["name"], "calls");
    EXPECT_EQ(inst["metrics"][0]["kind"], "counter");
    EXPECT_EQ(inst["metrics"][0]["labels"]["source"], "c");
    EXPECT_EQ(inst["metrics"][0]["value"].get<double>(), 3.0);
    auto map = run({"bpftool", "-j", "map", "show", "pinned",
                    inst["details"].value("stats_pin", std::string("?"))});
    ASSERT_EQ(map.exit_code, 0) << map.err;
    EXPECT_EQ(json::parse(map.out)["name"], "stats");
    // The optional hook the C plugin asked for is reported dead, not lost.
    bool optional_seen = false;
    for (auto& h : inst["hooks"])
      if (h["prog"] == "optional_missing") optional_seen = !h["live"].get<bool>();
    EXPECT_TRUE(optional_seen) << inst.dump(2);

    // validate() of the C plugin reaches the manifest's diagnostics.
    auto bad = run_bpfmgr({"validate", write_temp_file(test_manifest_header(root) +
                                                       instance("d", "ccount",
                                                                "label = \"\"\n"))});
    EXPECT_EQ(bad.exit_code, 2);
    EXPECT_NE(bad.err.find("must not be empty"), std::string::npos) << bad.err;
    EXPECT_NE(bad.err.find("hint: label = \"c\""), std::string::npos) << bad.err;

    // Its kernel_requirements (2.2) reach them too, at the option's line.
    auto manifest = test_manifest_header(root) +
                    instance("k", "ccount", "label = \"needs-missing-kfunc\"\n");
    auto needs = run_bpfmgr({"validate", write_temp_file(manifest)});
    EXPECT_EQ(needs.exit_code, 2);
    EXPECT_NE(needs.err.find(":9:1: error: instance 'k' (plugin ccount): label = "
                             "\"needs-missing-kfunc\" needs kfunc bpfmgr_test_no_such_kfunc "
                             "(Linux 9.9+); this kernel is " + std::string(u.release)),
              std::string::npos)
        << manifest << needs.err;

    ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
  }
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

// A plugin built for plugin API 2.0 (before pin_path was appended to the
// context table) still loads and works under this 2.2 core.
TEST(Abi, PluginOfAnOlderMinorVersionStillLoads) {
  auto before = KernelObjects::settled(kOurs);
  {
    PinRoot root;
    auto r = load(test_manifest_header(root) + instance("old", "ccount20"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (int i = 0; i < 2; ++i) ::getppid();
    auto st = run_bpfmgr({"status", "--json", "--pin-root", root.path()});
    ASSERT_EQ(st.exit_code, 0) << st.err;
    auto inst = json::parse(st.out)["instances"][0];
    EXPECT_EQ(inst["plugin"], "ccount20");
    auto* calls = counter(inst, "getppid_calls");
    ASSERT_NE(calls, nullptr) << inst.dump(2);
    EXPECT_EQ((*calls)["value"].get<std::uint64_t>(), 2u);
    EXPECT_FALSE(inst["details"].contains("stats_pin")) << inst.dump(2);
    EXPECT_FALSE(inst["details"].contains("kernel")) << inst.dump(2);
    EXPECT_TRUE(inst["metrics"].empty()) << inst.dump(2);
    auto plugins = json::parse(run_bpfmgr({"plugins", "--json", "--path", test_plugin_dir()}).out);
    EXPECT_EQ(plugins["api_version"], "2.2.0");
    bool listed = false;
    for (auto& p : plugins["plugins"])
      if (p["name"] == "ccount20") {
        listed = true;
        EXPECT_EQ(p["api_version"], "2.0.0") << p.dump();
      }
    EXPECT_TRUE(listed) << plugins.dump(2);
    ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
  }
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

TEST(Abi, NonStdExceptionInAHookRollsTheLoadBack) {
  auto before = KernelObjects::settled(kOurs);
  PinRoot root;
  // The first instance is staged (pinned, attached) before the second
  // one's attach() attaches a program and then throws 42.
  auto r = load(test_manifest_header(root) + instance("good", "testcount") +
                instance("boom", "testthrow"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("instance 'boom' (plugin testthrow): attach: threw an "
                       "exception that is not a std::exception"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("rolled back"), std::string::npos) << r.err;
  EXPECT_EQ(before.diff_settled(kOurs), "");
  EXPECT_FALSE(fs::exists(root.path()));
}

TEST(Abi, CrashInAfterAttachLeavesWhatTheNextUnpinRemoves) {
  auto before = KernelObjects::settled(kOurs);
  {
    PinRoot root;
    auto manifest = write_temp_file(test_manifest_header(root) + instance("crash", "testcrash"));
    auto r = run_bpfmgr({"load", manifest});
    ASSERT_EQ(r.exit_code, 128 + SIGSEGV) << r.out << r.err;
    // The process died with a program attached and pinned in staging.
    bool staged_link = false;
    for (auto& p : pins_under(root.path()))
      staged_link |= p.find("/_staging-crash/links/") != std::string::npos;
    ASSERT_TRUE(staged_link);
    for (int i = 0; i < 2; ++i) ::getppid();
    EXPECT_NE(before.diff(KernelObjects::snapshot(), kOurs), "");

    // status tells the truth about it: the instance, an uncommitted load,
    // the link still attached there (the kernel's ids), programs and maps.
    const std::string staging = root.path() + "/_staging-crash";
    auto link = run({"bpftool", "-j", "link", "show", "pinned", staging + "/links/count_getppid"});
    ASSERT_EQ(link.exit_code, 0) << link.err;
    auto link_info = json::parse(link.out);
    auto st = run_bpfmgr({"status", "--json", "--pin-root", root.path()});
    EXPECT_EQ(st.exit_code, 0) << st.err;
    auto sj = json::parse(st.out);
    EXPECT_TRUE(sj["instances"].empty()) << sj.dump(2);
    ASSERT_EQ(sj["interrupted"].size(), 1u) << sj.dump(2);
    auto& left = sj["interrupted"][0];
    EXPECT_EQ(left["instance"], "crash");
    EXPECT_EQ(left["staging"], staging);
    EXPECT_EQ(left["committing"], false);
    EXPECT_EQ(left["next"], "the next load or unpin reverts it");
    ASSERT_EQ(left["links"].size(), 1u) << left.dump(2);
    EXPECT_EQ(left["links"][0]["name"], "count_getppid");
    EXPECT_EQ(left["links"][0]["id"], link_info["id"]);
    EXPECT_EQ(left["links"][0]["prog_id"], link_info["prog_id"]);
    EXPECT_EQ(left["programs"], json::array({"count_getppid", "optional_missing"}));
    EXPECT_EQ(left["maps"], json::array({"stats"}));
    auto text = run_bpfmgr({"status", "--pin-root", root.path()});
    EXPECT_EQ(text.exit_code, 0) << text.err;
    EXPECT_NE(text.out.find("interrupted load of crash: staged in " + staging +
                            ", never committed (the next load or unpin reverts it)"),
              std::string::npos)
        << text.out;
    EXPECT_NE(text.out.find("  staged link count_getppid id " +
                            std::to_string(link_info["id"].get<int>()) + " runs prog " +
                            std::to_string(link_info["prog_id"].get<int>()) +
                            " (attached until removed)"),
              std::string::npos)
        << text.out;
    EXPECT_NE(text.out.find("  staged programs: count_getppid optional_missing\n"),
              std::string::npos)
        << text.out;
    EXPECT_NE(text.out.find("  staged maps: stats\n"), std::string::npos) << text.out;

    // unpin removes it and says what it removed (not "nothing to unpin").
    auto un = run_bpfmgr({"unpin", "--pin-root", root.path()});
    EXPECT_EQ(un.exit_code, 0) << un.err;
    EXPECT_NE(un.out.find("recovered: crash: reverted a load interrupted before its commit; "
                          "removed " + staging + " (links: count_getppid; programs: "
                          "count_getppid, optional_missing; maps: stats)"),
              std::string::npos)
        << un.out;
    EXPECT_EQ(un.out.find("nothing to unpin"), std::string::npos) << un.out;
    EXPECT_TRUE(pins_under(root.path()).empty());
    EXPECT_FALSE(fs::exists(staging));
  }
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

TEST(Abi, CrashInAfterAttachIsClearedByTheNextLoad) {
  auto before = KernelObjects::settled(kOurs);
  {
    PinRoot root;
    auto crash = run_bpfmgr(
        {"load", write_temp_file(test_manifest_header(root) + instance("crash", "testcrash"))});
    ASSERT_EQ(crash.exit_code, 128 + SIGSEGV) << crash.err;
    // The same instance name, now from a plugin that works: the load
    // reverts the leftovers first and says what it removed.
    auto r = load(test_manifest_header(root) + instance("crash", "testcount"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("recovered: crash: reverted a load interrupted before its commit; "
                         "removed " + root.path() + "/_staging-crash (links: count_getppid; "
                         "programs: count_getppid, optional_missing; maps: stats)"),
              std::string::npos)
        << r.err;
    for (auto& p : pins_under(root.path()))
      EXPECT_EQ(p.find("/_staging-"), std::string::npos) << p;
    ::getppid();
    auto st = json::parse(run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
    auto* calls = counter(st["instances"][0], "getppid_calls");
    ASSERT_NE(calls, nullptr) << st.dump(2);
    EXPECT_EQ((*calls)["value"].get<std::uint64_t>(), 1u);
  }
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

// What every command maps before main: libbpf (shared: plugins use the
// core's libbpf objects) with libelf, libc and the loader; the C++ runtime
// is linked in and not exported, so a plugin's C++ never binds to it.
TEST(Abi, ExecutableNeedsOnlyLibbpfLibelfAndLibc) {
  auto r = run({"readelf", "-d", "-W", bpfmgr_binary()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> needed;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);)
    if (auto b = line.find("Shared library: ["); b != std::string::npos) {
      auto lib = line.substr(b + 17, line.find(']', b) - b - 17);
      if (lib.rfind("ld-linux", 0) != 0) needed.insert(lib);  // the loader, per arch
    }
  EXPECT_EQ(needed, (std::set<std::string>{"libbpf.so.1", "libelf.so.1", "libc.so.6"}));
  r = run({"nm", "-D", "--defined-only", "-C", bpfmgr_binary()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("std::"), std::string::npos) << r.out;
}

// `bpfmgr bench PLUGIN` runs the harness executable bench_PLUGIN (plugins
// carry no benchmark code) and passes its arguments and exit code through.
TEST(Abi, BenchLaunchesTheHarnessExecutable) {
  auto r = run_bpfmgr({"bench", "nosuchplugin"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no benchmark harness for plugin 'nosuchplugin'"), std::string::npos)
      << r.err;
  auto harness = fs::path(bpfmgr_binary()).parent_path() / "bench_core";
  if (!fs::exists(harness)) GTEST_SKIP() << "benchmarks not built";
  r = run_bpfmgr({"bench", "core", "--benchmark_list_tests=true"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
}

}  // namespace
}  // namespace bpfmgr::test
