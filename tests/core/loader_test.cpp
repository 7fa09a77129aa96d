// The core against the real kernel: load, pin, attach, inspect with bpftool,
// update, unpin, and every failure leaving the kernel exactly as before.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string counter_instance(const std::string& name, long tgid,
                             int max_entries = 64) {
  return "\n[[instance]]\nname = \"" + name +
         "\"\nplugin = \"testcount\"\n[instance.options]\ntgid = " +
         std::to_string(tgid) + "\nmax_entries = " + std::to_string(max_entries) +
         "\n";
}

CommandResult load(const std::string& manifest_text,
                   std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"load", write_temp_file(manifest_text)};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_bpfmgr(args);
}

json bpftool_json(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"bpftool", "-j"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out.empty() ? "null" : r.out);
}

std::uint64_t calls_in(const std::string& map_pin) {
  auto dump = bpftool_json({"map", "dump", "pinned", map_pin});
  for (auto& e : dump)
    if (e["formatted"]["key"] == 0)
      return e["formatted"]["value"]["calls"].get<std::uint64_t>();
  return 0;
}

std::uint32_t id_of(const std::string& kind, const std::string& pin) {
  return bpftool_json({kind, "show", "pinned", pin})["id"].get<std::uint32_t>();
}

// Names of every kernel object the test plugins create (prog names are cut
// at 15 characters): comparisons stay exact while other BPF users run.
// State-record maps ("bpfmgr_state") are left out: every bpfmgr on the host
// makes them; the tests check the pin root for them instead.
const std::vector<std::string> kOurs = {
    "count_getppid",   "optional_missin", "egress",         "stats",
    "testcoun.rodata", "testreje.rodata", "testcgro.rodata"};

KernelObjects settled() { return KernelObjects::settled(kOurs); }
std::string leftovers(const KernelObjects& before) { return before.diff_settled(kOurs); }

void call_getppid(int n) {
  for (int i = 0; i < n; ++i) ::getppid();
}

// uname -r's major.minor at least `major`.`minor`: an answer that does not
// come from bpfmgr's own feature probe.
bool kernel_at_least(int major, int minor) {
  utsname u{};
  int ma = 0, mi = 0;
  return ::uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &ma, &mi) == 2 &&
         (ma > major || (ma == major && mi >= minor));
}

// The Loader tests load the tracepoint test plugin, which validate refuses
// where perf_event links cannot be pinned (before 5.15): there they skip
// saying so; KernelLimits.PerfEventProgramsNeedPinnablePerfEventLinks
// checks the refusal itself.
class Loader : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernel_at_least(5, 15))
      GTEST_SKIP() << "the test plugin's tracepoint program needs pinnable perf_event links "
                      "(Linux 5.15+), which validate checks; this kernel has none";
  }
};

TEST_F(Loader, LoadPinsAttachesAndUnpinLeavesNothing) {
  auto before = settled();
  {
    PinRoot root;
    auto r = load(test_manifest_header(root) + counter_instance("counter", ::getpid()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("loaded: counter"), std::string::npos) << r.out;

    auto dir = root.path() + "/counter";
    for (auto p : {"/state", "/maps/stats", "/progs/count_getppid",
                   "/links/count_getppid", "/progs/optional_missing"})
      EXPECT_TRUE(fs::exists(dir + p)) << p;
    EXPECT_FALSE(fs::exists(dir + "/links/optional_missing"));

    // The pinned link keeps the program attached after bpfmgr exited: the
    // map counts exactly our calls (the filter excludes other processes),
    // and bpftool prints the value's BTF field names.
    call_getppid(17);
    EXPECT_EQ(calls_in(dir + "/maps/stats"), 17u);

    auto status = json::parse(
        run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
    auto& inst = status["instances"][0];
    EXPECT_EQ(inst["plugin"], "testcount");
    EXPECT_EQ(inst["plugin_version"], "1.2.3");
    EXPECT_EQ(inst["maps"][0]["btf"], true);
    EXPECT_EQ(inst["maps"][0]["type"], "hash");
    EXPECT_EQ(inst["counters"][0]["name"], "getppid_calls");
    EXPECT_EQ(inst["counters"][0]["value"], 17);
    bool saw_dead_hook = false;
    for (auto& h : inst["hooks"])
      if (h["prog"] == "optional_missing") {
        saw_dead_hook = true;
        EXPECT_EQ(h["live"], false);
        EXPECT_NE(h["reason"].get<std::string>().find("does not exist"),
                  std::string::npos);
      }
    EXPECT_TRUE(saw_dead_hook);
    auto link_id = id_of("link", dir + "/links/count_getppid");
    EXPECT_EQ(inst["links"][0]["id"], link_id);

    auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
    ASSERT_EQ(u.exit_code, 0) << u.err;
    EXPECT_TRUE(pins_under(root.path()).empty());
    EXPECT_FALSE(fs::exists(root.path()));
  }
  EXPECT_EQ(leftovers(before), "");
}

TEST_F(Loader, StatusSeesAHookWhoseLinkWasRemovedByHand) {
  PinRoot root;
  ASSERT_EQ(load(test_manifest_header(root) + counter_instance("counter", ::getpid())).exit_code, 0);
  auto check = [&] { return run_bpfmgr({"status", "--check", "--pin-root", root.path()}); };
  auto c = check();
  EXPECT_EQ(c.exit_code, 0) << c.err;  // its optional hook this kernel lacks is no problem
  auto dir = root.path() + "/counter";
  ASSERT_EQ(::unlink((dir + "/links/count_getppid").c_str()), 0);  // detaches it
  c = check();
  EXPECT_EQ(c.exit_code, 3) << c.err;
  EXPECT_NE(c.err.find("not as loaded: counter: "), std::string::npos) << c.err;
  EXPECT_NE(c.err.find("link count_getppid: its link pin is missing"), std::string::npos)
      << c.err;
  auto st = json::parse(run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
  ASSERT_EQ(st["problems"].size(), 1u) << st.dump(2);
  bool checked = false;
  for (auto& h : st["instances"][0]["hooks"])
    if (h["prog"] == "count_getppid") {
      EXPECT_EQ(h["live"], false);
      EXPECT_NE(h["reason"].get<std::string>().find("link pin is missing"), std::string::npos);
      checked = true;
    }
  EXPECT_TRUE(checked);
  call_getppid(3);  // really detached: nothing counts
  EXPECT_EQ(calls_in(dir + "/maps/stats"), 0u);
  // The next load sees the missing pin and restores the instance.
  auto r = load(test_manifest_header(root) + counter_instance("counter", ::getpid()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("updated: counter"), std::string::npos) << r.out;
  call_getppid(2);
  EXPECT_EQ(calls_in(dir + "/maps/stats"), 2u);
  c = check();
  EXPECT_EQ(c.exit_code, 0) << c.err;
}

TEST_F(Loader, SecondLoadChangesNothing) {
  PinRoot root;
  auto text = test_manifest_header(root) + counter_instance("counter", ::getpid());
  ASSERT_EQ(load(text).exit_code, 0);
  auto dir = root.path() + "/counter";
  auto link = id_of("link", dir + "/links/count_getppid");
  auto prog = id_of("prog", dir + "/progs/count_getppid");
  auto before = settled();
  auto r = load(text);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << r.out;
  EXPECT_EQ(leftovers(before), "");
  EXPECT_EQ(id_of("link", dir + "/links/count_getppid"), link);
  EXPECT_EQ(id_of("prog", dir + "/progs/count_getppid"), prog);
}

TEST_F(Loader, UpdateReplacesProgramsAndKeepsMapContents) {
  PinRoot root;
  ASSERT_EQ(load(test_manifest_header(root) + counter_instance("counter", 1)).exit_code, 0);
  auto dir = root.path() + "/counter";
  auto map_id = id_of("map", dir + "/maps/stats");
  auto prog_id = id_of("prog", dir + "/progs/count_getppid");
  // Seed the map through its pin: an update must keep this value.
  auto seed = run({"bpftool", "map", "update", "pinned", dir + "/maps/stats", "key",
                   "0", "0", "0", "0", "value", "100", "0", "0", "0", "0", "0", "0",
                   "0", "0", "0", "0", "0", "0", "0", "0", "0"});
  ASSERT_EQ(seed.exit_code, 0) << seed.err;

  auto r = load(test_manifest_header(root) + counter_instance("counter", ::getpid()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("updated: counter"), std::string::npos) << r.out;
  EXPECT_EQ(id_of("map", dir + "/maps/stats"), map_id);
  EXPECT_NE(id_of("prog", dir + "/progs/count_getppid"), prog_id);
  call_getppid(5);
  EXPECT_EQ(calls_in(dir + "/maps/stats"), 105u);
  // Exactly one link runs the program: the old one went with the update.
  auto links = bpftool_json({"link", "show"});
  int ours = 0;
  auto new_prog = id_of("prog", dir + "/progs/count_getppid");
  for (auto& l : links)
    if (l["prog_id"] == new_prog || l["prog_id"] == prog_id) ++ours;
  EXPECT_EQ(ours, 1);
}

TEST_F(Loader, ChangedMapDefinitionNeedsResetMaps) {
  PinRoot root;
  ASSERT_EQ(load(test_manifest_header(root) + counter_instance("counter", 1, 64)).exit_code, 0);
  auto dir = root.path() + "/counter";
  auto map_id = id_of("map", dir + "/maps/stats");
  auto before = settled();

  auto bigger = test_manifest_header(root) + counter_instance("counter", 1, 128);
  auto r = load(bigger);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("map 'stats' changed definition (max entries 128 vs 64)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(leftovers(before), "");

  r = load(bigger, {"--reset-maps"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(id_of("map", dir + "/maps/stats"), map_id);
  auto info = bpftool_json({"map", "show", "pinned", dir + "/maps/stats"});
  EXPECT_EQ(info["max_entries"], 128);
}

TEST_F(Loader, VerifierRejectionLeavesKernelAsBefore) {
  PinRoot root;
  auto before = settled();
  // The good instance comes first, so it is staged (pinned, attached)
  // before the second one fails.
  auto r = load(test_manifest_header(root) + counter_instance("good", 1) +
                "\n[[instance]]\nname = \"bad\"\nplugin = \"testreject\"\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("instance 'bad' (plugin testreject): program "
                       "'count_getppid' was rejected by the verifier"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("R0 invalid mem access 'map_value_or_null'"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("rolled back"), std::string::npos);
  EXPECT_EQ(leftovers(before), "");
  EXPECT_FALSE(fs::exists(root.path()));
}

TEST_F(Loader, AttachFailureLeavesKernelAsBefore) {
  PinRoot root;
  ScopedCgroup cg;
  auto before = settled();
  auto r = load(test_manifest_header(root) + counter_instance("good", 1) +
                "\n[[instance]]\nname = \"cg\"\nplugin = \"testcgroup\"\n"
                "[instance.options]\ncgroup = \"" + cg.path() + "/missing\"\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cgroup " + cg.path() + "/missing: No such file"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(leftovers(before), "");
  EXPECT_FALSE(fs::exists(root.path()));
}

TEST_F(Loader, FailedUpdateKeepsThePreviousVersionRunning) {
  PinRoot root;
  ScopedCgroup cg;
  auto cg_instance = [&](const std::string& path) {
    return "\n[[instance]]\nname = \"cg\"\nplugin = \"testcgroup\"\n"
           "[instance.options]\ntgid = " + std::to_string(::getpid()) +
           "\ncgroup = \"" + path + "\"\n";
  };
  ASSERT_EQ(load(test_manifest_header(root) + cg_instance(cg.path())).exit_code, 0);
  auto before = settled();
  auto r = load(test_manifest_header(root) + cg_instance(cg.path() + "/missing"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(leftovers(before), "");
  call_getppid(3);  // the original programs still run
  EXPECT_EQ(calls_in(root.path() + "/cg/maps/stats"), 3u);
}

TEST_F(Loader, CgroupLinkSwitchesToTheNewProgramInPlace) {
  PinRoot root;
  ScopedCgroup cg;
  auto instance = [&](long tgid) {
    return test_manifest_header(root) + "\n[[instance]]\nname = \"cg\"\nplugin = \"testcgroup\"\n"
                          "[instance.options]\ntgid = " + std::to_string(tgid) +
           "\ncgroup = \"" + cg.path() + "\"\n";
  };
  ASSERT_EQ(load(instance(1)).exit_code, 0);
  auto link_pin = root.path() + "/cg/links/egress";
  auto link = id_of("link", link_pin);
  auto old_prog = id_of("prog", root.path() + "/cg/progs/egress");
  auto r = load(instance(2));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The same link (no moment without a program) now runs the new program.
  EXPECT_EQ(id_of("link", link_pin), link);
  auto new_prog = id_of("prog", root.path() + "/cg/progs/egress");
  EXPECT_NE(new_prog, old_prog);
  EXPECT_EQ(bpftool_json({"link", "show", "pinned", link_pin})["prog_id"], new_prog);
  auto tree = bpftool_json({"cgroup", "show", cg.path()});
  ASSERT_EQ(tree.size(), 1u);
  EXPECT_EQ(tree[0]["id"], new_prog);
}

TEST_F(Loader, CgroupProgramsOfSeveralInstancesShareAHook) {
  PinRoot root;
  ScopedCgroup cg;
  std::string text = test_manifest_header(root);
  for (auto name : {"first", "second"})
    text += std::string("\n[[instance]]\nname = \"") + name +
            "\"\nplugin = \"testcgroup\"\n[instance.options]\ncgroup = \"" +
            cg.path() + "\"\n";
  auto r = load(text);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto tree = bpftool_json({"cgroup", "show", cg.path()});
  ASSERT_EQ(tree.size(), 2u) << tree.dump();
  EXPECT_EQ(tree[0]["attach_type"], "cgroup_inet_egress");
  EXPECT_EQ(tree[1]["attach_type"], "cgroup_inet_egress");
}

TEST_F(Loader, RefusesCgroupHeldExclusivelyBySomeoneElse) {
  PinRoot root;
  ScopedCgroup cg;
  // Someone else's program, attached without BPF_F_ALLOW_MULTI. loadall
  // pins every program of the object, so none is being freed meanwhile.
  auto dir = root.path() + "-foreign";
  auto mk = run({"bpftool", "prog", "loadall",
                 build_dir() + "/tests/core/plugins/testcgroup.gen/testcgroup.bpf.o",
                 dir});
  if (mk.exit_code != 0) GTEST_SKIP() << "cannot load foreign program: " << mk.err;
  auto pin = dir + "/egress";
  auto att = run({"bpftool", "cgroup", "attach", cg.path(), "egress", "pinned", pin});
  ASSERT_EQ(att.exit_code, 0) << att.err;
  auto before = settled();
  auto r = load(test_manifest_header(root) + "\n[[instance]]\nname = \"cg\"\nplugin = \"testcgroup\"\n"
                               "[instance.options]\ncgroup = \"" + cg.path() + "\"\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bpfmgr never replaces programs it did not attach"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(leftovers(before), "");
  auto tree = bpftool_json({"cgroup", "show", cg.path()});
  EXPECT_EQ(tree.size(), 1u);  // the foreign program is still there
  run({"bpftool", "cgroup", "detach", cg.path(), "egress", "pinned", pin});
  fs::remove_all(dir);
}

TEST_F(Loader, WrongApiVersionTouchesNothing) {
  PinRoot root;
  auto before = settled();
  auto r = load(test_manifest_header(root) + counter_instance("good", 1) +
                "\n[[instance]]\nname = \"new\"\nplugin = \"" + test_plugin_dir() +
                "/bpfmgr-badnewermajor.so\"\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bpfmgr-badnewermajor.so was built for plugin API 99.0.0 but "
                       "this bpfmgr provides 2."),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(" (major versions differ); upgrade bpfmgr"), std::string::npos) << r.err;
  EXPECT_EQ(leftovers(before), "");
  EXPECT_FALSE(fs::exists(root.path()));
}

TEST(KernelLimits, PerfEventProgramsNeedPinnablePerfEventLinks) {
  // testcount's tracepoint program attaches through a perf event: only
  // 5.15+ makes that a BPF link bpfmgr can pin. Before, validate refuses
  // it naming the program and the kernel that has it, and load touches
  // nothing (it used to fail at the pin: "cannot pin link ...: Invalid
  // argument").
  PinRoot root;
  auto manifest = write_temp_file(test_manifest_header(root) + counter_instance("c", 1));
  auto v = run_bpfmgr({"validate", manifest});
  auto before = settled();
  auto l = run_bpfmgr({"load", manifest});
  if (kernel_at_least(5, 15)) {
    EXPECT_EQ(v.exit_code, 0) << v.err;
    EXPECT_EQ(l.exit_code, 0) << l.err;
    return;
  }
  EXPECT_EQ(v.exit_code, 2) << v.err;
  for (auto* words : {"needs link type perf_event (Linux 5.15+)", "count_getppid"})
    EXPECT_NE(v.err.find(words), std::string::npos) << v.err;
  EXPECT_EQ(l.exit_code, 2) << l.err;
  EXPECT_NE(l.err.find("needs link type perf_event"), std::string::npos) << l.err;
  EXPECT_EQ(leftovers(before), "");
  EXPECT_FALSE(fs::exists(root.path()));
}

TEST_F(Loader, DryRunVerifiesAndPinsNothing) {
  PinRoot root;
  auto before = settled();
  auto r = load(test_manifest_header(root) + counter_instance("counter", 1), {"--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("passed the verifier (counter)"), std::string::npos) << r.out;
  EXPECT_EQ(leftovers(before), "");
  EXPECT_FALSE(fs::exists(root.path()));
  r = load(test_manifest_header(root) + "\n[[instance]]\nname = \"bad\"\nplugin = \"testreject\"\n",
           {"--dry-run"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("rejected by the verifier"), std::string::npos);
}

TEST_F(Loader, SharedMapIsTheOwnersMap) {
  PinRoot root;
  auto text = test_manifest_header(root) + counter_instance("owner", ::getpid()) +
              counter_instance("user", ::getpid()) +
              "[instance.maps]\nstats = \"owner\"\n";
  auto r = load(text);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(root.path() + "/user/maps/stats"));
  call_getppid(4);  // both instances count into the one map
  EXPECT_EQ(calls_in(root.path() + "/owner/maps/stats"), 8u);
  auto status = json::parse(
      run_bpfmgr({"status", "--json", "--pin-root", root.path(), "user"}).out);
  EXPECT_EQ(status["instances"][0]["maps"][0]["shared_from"], "owner");

  // A sharer whose map definition differs (here max_entries, set by the
  // plugin's before_load from an option) is refused by validate and by
  // load alike, at the share's line, before anything is loaded.
  auto mismatch = test_manifest_header(root) + counter_instance("owner", ::getpid()) +
                  counter_instance("user", ::getpid(), 32) +
                  "[instance.maps]\nstats = \"owner\"\n";
  auto before = settled();
  auto mismatch_file = write_temp_file(mismatch);
  auto v = run_bpfmgr({"validate", mismatch_file});
  EXPECT_EQ(v.exit_code, 2);
  EXPECT_NE(v.err.find("max entries 32 vs 64"), std::string::npos) << v.err;
  auto share_line = 1 + std::count(mismatch.begin(),
                                   mismatch.begin() + mismatch.rfind("stats = "), '\n');
  EXPECT_NE(v.err.find(".toml:" + std::to_string(share_line) + ":"), std::string::npos)
      << v.err;
  r = run_bpfmgr({"load", mismatch_file});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("max entries 32 vs 64"), std::string::npos) << r.err;
  EXPECT_EQ(leftovers(before), "");
}

// Plugins ask the context where their pins are (testcount reports them in
// status and logs them from after_attach); the answers are the pins the
// kernel and bpftool see, and a shared map's is its owner's.
TEST_F(Loader, PluginsAskTheContextForPinPaths) {
  PinRoot root;
  auto r = load(test_manifest_header(root) + counter_instance("owner", ::getpid()) +
                    counter_instance("user", ::getpid()) +
                    "[instance.maps]\nstats = \"owner\"\n",
                {"--log-level", "info"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto st = json::parse(run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
  ASSERT_EQ(st["instances"].size(), 2u) << st.dump(2);
  for (auto& inst : st["instances"]) {
    auto name = inst["instance"].get<std::string>();
    auto& d = inst["details"];
    ASSERT_TRUE(d.contains("stats_pin")) << inst.dump(2);
    auto map_pin = d["stats_pin"].get<std::string>();
    auto prog_pin = d["prog_pin"].get<std::string>();
    auto link_pin = d["link_pin"].get<std::string>();
    EXPECT_EQ(map_pin, root.path() + "/owner/maps/stats") << name;
    EXPECT_EQ(prog_pin, root.path() + "/" + name + "/progs/count_getppid");
    EXPECT_EQ(link_pin, root.path() + "/" + name + "/links/count_getppid");
    // The kernel's view: the pinned link runs the pinned program, which
    // uses the pinned map.
    auto prog = bpftool_json({"prog", "show", "pinned", prog_pin});
    EXPECT_EQ(bpftool_json({"link", "show", "pinned", link_pin})["prog_id"], prog["id"]);
    auto map_ids = prog["map_ids"].get<std::vector<std::uint32_t>>();
    EXPECT_NE(std::find(map_ids.begin(), map_ids.end(), id_of("map", map_pin)), map_ids.end())
        << name << ": " << prog.dump();
    // The load-time context named the same pins before they were committed.
    EXPECT_NE(r.err.find(name + " pins: map " + map_pin + " prog " + prog_pin + " link " +
                         link_pin),
              std::string::npos)
        << r.err;
  }
}

// One rule for a shared map's definition, applied once after both
// plugins' before_load: validate and load refuse a share whose type differs
// with the same message at the same file:line:column, and load touches
// nothing (the owner here is sockops, whose sock_hash is a sockhash).
TEST_F(Loader, SharedMapTypeMismatchIsOneCheckForValidateAndLoad) {
  PinRoot root;
  auto text = test_manifest_header(root) + "\n[[instance]]\nname = \"owner\"\nplugin = \"" +
              plugin_dir() + "/bpfmgr-sockops.so\"\n" + counter_instance("user", ::getpid()) +
              "[instance.maps]\nstats = { instance = \"owner\", map = \"sock_hash\" }\n";
  auto share_line = 1 + std::count(text.begin(), text.begin() + text.rfind("stats = "), '\n');
  auto file = write_temp_file(text);
  const std::string why =
      ".toml:" + std::to_string(share_line) + ":1: error: map 'stats' of instance 'user' "
      "cannot be instance 'owner''s map 'sock_hash': type hash vs sockhash (after both "
      "plugins' before_load)";
  auto v = run_bpfmgr({"validate", file});
  EXPECT_EQ(v.exit_code, 2) << v.out;
  EXPECT_NE(v.err.find(why), std::string::npos) << v.err;
  auto r = run_bpfmgr({"load", file});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nothing was loaded"), std::string::npos) << r.err;
  // Refused before the pin root is created or any object is loaded.
  EXPECT_FALSE(fs::exists(root.path()));
}

// An instance's object is opened and prepared once per load: the spec
// resolve builds (before_load run, shared maps compared on it) is the
// object the load turns into kernel objects, for an owner and a sharer
// alike; validate prepares each once too, and a reload with nothing to do
// none. The sharer gets the owner's map as before_load sized it.
TEST_F(Loader, EachInstanceIsPreparedOncePerLoad) {
  PinRoot root;
  auto instance = [](const std::string& name) {
    return "\n[[instance]]\nname = \"" + name +
           "\"\nplugin = \"testmarker\"\n[instance.options]\ntgid = 1\nmax_entries = 7\n";
  };
  auto share = "[instance.maps]\nstats = { instance = \"owner\", map = \"stats\" }\n";
  auto file = write_temp_file(test_manifest_header(root) + instance("owner") +
                              instance("user") + share);
  auto count = [](const std::string& text, const std::string& part) {
    std::size_t n = 0;
    for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
  };
  auto v = run_bpfmgr({"validate", "--log-level", "info", file});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(count(v.err, "owner: before_load"), 1u) << v.err;
  EXPECT_EQ(count(v.err, "user: before_load"), 1u) << v.err;

  auto r = run_bpfmgr({"load", "--log-level", "info", file});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, "owner: before_load"), 1u) << r.err;
  EXPECT_EQ(count(r.err, "user: before_load"), 1u) << r.err;
  auto owner_map = root.path() + "/owner/maps/stats";
  auto map = bpftool_json({"map", "show", "pinned", owner_map});
  EXPECT_EQ(map["max_entries"], 7) << map.dump();
  auto user = bpftool_json({"prog", "show", "pinned", root.path() + "/user/progs/count_getppid"});
  auto ids = user["map_ids"].get<std::vector<std::uint32_t>>();
  EXPECT_NE(std::find(ids.begin(), ids.end(), map["id"].get<std::uint32_t>()), ids.end())
      << user.dump();

  auto again = run_bpfmgr({"load", "--log-level", "info", file});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(count(again.err, "before_load"), 0u) << again.err;
  EXPECT_NE(again.out.find("all 2 instance(s) are loaded and unchanged"), std::string::npos)
      << again.out;
}

TEST_F(Loader, InstancesDroppedFromTheManifestAreUnpinned) {
  PinRoot root;
  auto path = write_temp_file(test_manifest_header(root) + counter_instance("a", 1) +
                              counter_instance("b", 1));
  ASSERT_EQ(run_bpfmgr({"load", path}).exit_code, 0);
  std::ofstream(path) << test_manifest_header(root) + counter_instance("a", 1);
  auto r = run_bpfmgr({"load", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("removed: b"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(root.path() + "/b"));
  EXPECT_TRUE(fs::exists(root.path() + "/a/state"));
}

TEST_F(Loader, UnpinRecoversFromAnInterruptedLoad) {
  auto before = settled();
  {
    PinRoot root;
    ASSERT_EQ(load(test_manifest_header(root) + counter_instance("a", 1) +
                   counter_instance("b", 1)).exit_code, 0);
    // A crash before the commit leaves a staging directory with attached
    // links (simulated by moving a committed instance there).
    ASSERT_EQ(::rename((root.path() + "/b").c_str(),
                       (root.path() + "/_staging-b").c_str()), 0);
    auto st = run_bpfmgr({"status", "--pin-root", root.path()});
    EXPECT_NE(st.out.find("interrupted load of b"), std::string::npos) << st.out;
    auto r = run_bpfmgr({"unpin", "--pin-root", root.path()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("b: reverted"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(root.path()));
  }
  EXPECT_EQ(leftovers(before), "");
}

TEST_F(Loader, UnpinOneInstanceLeavesTheOthers) {
  PinRoot root;
  ASSERT_EQ(load(test_manifest_header(root) + counter_instance("a", ::getpid()) +
                 counter_instance("b", ::getpid())).exit_code, 0);
  auto r = run_bpfmgr({"unpin", "--pin-root", root.path(), "a"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(root.path() + "/a"));
  call_getppid(2);
  EXPECT_EQ(calls_in(root.path() + "/b/maps/stats"), 2u);
  r = run_bpfmgr({"unpin", "--pin-root", root.path(), "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no instance 'nope'"), std::string::npos);
}

TEST_F(Loader, InterruptedLoadLeavesAllOrNothing) {
  // SIGINT at random moments of a load: afterwards the instance is either
  // fully there or not at all, and nothing is left in staging.
  PinRoot root;
  auto path = write_temp_file(test_manifest_header(root) + counter_instance("a", 1) +
                              counter_instance("b", 1));
  ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
  std::mt19937 rng(12345);
  int loaded = 0, not_loaded = 0;
  for (int i = 0; i < 20; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::execl(bpfmgr_binary().c_str(), "bpfmgr", "--log-level", "off", "load",
              path.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30000));
    ::kill(pid, SIGINT);
    int status = 0;
    ::waitpid(pid, &status, 0);
    for (auto& p : pins_under(root.path()))
      ASSERT_EQ(p.find("/_staging-"), std::string::npos) << "left in staging: " << p;
    bool a = fs::exists(root.path() + "/a/state"), b = fs::exists(root.path() + "/b/state");
    ASSERT_EQ(a, b) << "half-applied load after SIGINT";
    if (a) {
      ++loaded;
      auto st = json::parse(run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
      for (auto& inst : st["instances"]) ASSERT_EQ(inst["complete"], true);
    } else {
      ++not_loaded;
    }
    ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path(), "--quiet"}).exit_code, 0);
  }
  std::printf("interrupted loads: %d complete, %d not started\n", loaded, not_loaded);
}

TEST(Cli, ValidateReportsEveryErrorWithPositionsAsJson) {
  auto path = write_temp_file("[[instance]]\nname = \"a\"\nplugin = \"testcount\"\n"
                              "[instance.options]\ntgd = 1\nmode = 3\n");
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  std::vector<std::string> argv{bpfmgr_binary(), "validate", "--json", path};
  auto r = run(argv);
  EXPECT_EQ(r.exit_code, 2);
  auto j = json::parse(r.out);
  ASSERT_EQ(j["errors"].size(), 2u) << r.out;
  EXPECT_EQ(j["errors"][0]["line"], 5);
  EXPECT_EQ(j["errors"][0]["hint"], "did you mean 'tgid'?");
  EXPECT_EQ(j["errors"][1]["line"], 6);
}

TEST(Cli, HelpAndUsageErrors) {
  auto r = run_bpfmgr({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("Exit codes"), std::string::npos);
  r = run_bpfmgr({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  r = run_bpfmgr({"load", "/nonexistent.toml"});
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace bpfmgr::test
