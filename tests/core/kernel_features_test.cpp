// Plugin API 2.2 against the running kernel: the core's one probe of kernel
// features, checked against bpftool's own probe and the kernel's BTF; kernel
// requirements refused by validate and load (nothing staged); degradations
// and typed metrics shown by status, --json and /metrics. Real plugins
// (tests/core/plugins/testkernel_plugin.cpp), real loads.
#include <gtest/gtest.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <filesystem>
#include <regex>

#include <nlohmann/json.hpp>

#include "kernel_features.hpp"
#include "metrics.hpp"
#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string release() {
  struct utsname u {};
  ::uname(&u);
  return u.release;
}

// (major, minor) of the running kernel.
std::pair<int, int> version() {
  int major = 0, minor = 0;
  std::sscanf(release().c_str(), "%d.%d", &major, &minor);
  return {major, minor};
}

// bpftool's own probe of this kernel (program and map types, helpers).
const json& bpftool_probe() {
  static const json j = [] {
    auto r = run({"bpftool", "-j", "feature", "probe", "kernel"});
    if (r.exit_code != 0) return json();
    return json::parse(r.out);
  }();
  return j;
}

TEST(KernelFeatures, ProgramMapAndHelperAnswersAgreeWithBpftool) {
  const auto& probe = bpftool_probe();
  ASSERT_TRUE(probe.contains("program_types")) << "bpftool feature probe failed";
  auto& k = KernelFeatures::running();
  for (auto type : {"sock_ops", "sk_msg", "tracepoint", "raw_tracepoint", "cgroup_skb",
                    "lsm", "tracing", "ext", "kprobe"}) {
    bool expected = probe["program_types"].value("have_" + std::string(type) + "_prog_type",
                                                 false);
    EXPECT_EQ(k.has(Feature::ProgType, type), expected) << type;
  }
  for (auto type : {"sockhash", "sk_storage", "ringbuf", "hash", "percpu_array"}) {
    bool expected = probe["map_types"].value("have_" + std::string(type) + "_map_type", false);
    EXPECT_EQ(k.has(Feature::MapType, type), expected) << type;
  }
  for (auto [prog, helper] : {std::pair{"sock_ops", "bpf_get_netns_cookie"},
                              {"sock_ops", "bpf_get_current_comm"},
                              {"sock_ops", "bpf_sk_storage_get"},
                              {"sk_msg", "bpf_msg_redirect_hash"},
                              {"tracepoint", "bpf_get_current_pid_tgid"}}) {
    auto& list = probe["helpers"][std::string(prog) + "_available_helpers"];
    bool expected = std::find(list.begin(), list.end(), helper) != list.end();
    EXPECT_EQ(k.has(Feature::Helper, std::string(prog) + ":" + helper), expected)
        << prog << ":" << helper;
  }
  // bpftool 7.1 (libbpf 1.1) lists this one for tracepoints: its probe reads
  // the verifier's "program of this type cannot use helper" as support. The
  // core looks for that wording too, so a sk_msg helper is absent here.
  EXPECT_FALSE(k.has(Feature::Helper, "tracepoint:bpf_msg_redirect_hash"));
  // Known facts of every kernel bpfmgr supports (5.15+ for the cookie).
  EXPECT_TRUE(k.has(Feature::ProgType, "sock_ops"));
  EXPECT_TRUE(k.has(Feature::Helper, "sock_ops:bpf_get_netns_cookie"));
  EXPECT_FALSE(k.has(Feature::ProgType, "no_such_type"));
  EXPECT_FALSE(k.has(Feature::Helper, "sock_ops:bpf_no_such_helper"));
  EXPECT_FALSE(k.has(Feature::Helper, "no_such_type:bpf_get_netns_cookie"));
  EXPECT_FALSE(k.has(Feature::Helper, "bpf_get_netns_cookie"));  // no program type
  EXPECT_FALSE(k.has(Feature::MapType, "no_such_map"));
  EXPECT_EQ(k.release(), release());
}

TEST(KernelFeatures, BtfTracefsAndLinkTypeAnswers) {
  auto& k = KernelFeatures::running();
  // Types, plain members, members of anonymous unions and structs, bitfields,
  // member paths.
  EXPECT_TRUE(k.has(Feature::BtfType, "struct tcp_sock"));
  EXPECT_TRUE(k.has(Feature::BtfType, "enum bpf_link_type"));
  EXPECT_TRUE(k.has(Feature::BtfType, "tcp_sock"));
  EXPECT_FALSE(k.has(Feature::BtfType, "union tcp_sock"));
  EXPECT_FALSE(k.has(Feature::BtfType, "struct bpfmgr_no_such_type"));
  EXPECT_FALSE(k.has(Feature::BtfType, "tcp_sendmsg"));  // a function, not a type
  EXPECT_TRUE(k.has(Feature::BtfField, "struct tcp_sock.snd_una"));
  EXPECT_TRUE(k.has(Feature::BtfField, "tcp_sock.snd_una"));
  EXPECT_TRUE(k.has(Feature::BtfField, "struct sk_buff.tstamp"));    // anonymous union
  EXPECT_TRUE(k.has(Feature::BtfField, "struct sk_buff.pkt_type"));  // bitfield, nested
  EXPECT_TRUE(k.has(Feature::BtfField, "struct sock.__sk_common.skc_family"));
  EXPECT_FALSE(k.has(Feature::BtfField, "struct sock.sk_family"));  // a #define
  EXPECT_FALSE(k.has(Feature::BtfField, "struct tcp_sock.bpfmgr_no_such_field"));
  EXPECT_FALSE(k.has(Feature::BtfField, "struct tcp_sock"));
  EXPECT_FALSE(k.has(Feature::BtfField, "struct tcp_sock.snd_una.x"));  // not a struct
  EXPECT_TRUE(k.has(Feature::BtfEnumValue, "BPF_SOCK_OPS_STATE_CB"));
  EXPECT_TRUE(k.has(Feature::BtfEnumValue, "BPF_SOCK_OPS_HDR_OPT_LEN_CB"));
  EXPECT_FALSE(k.has(Feature::BtfEnumValue, "BPF_SOCK_OPS_BPFMGR_NO_SUCH_CB"));
  // Kfuncs: functions of the kernel's BTF; where the kernel tags its kfuncs
  // (pahole 1.26+), only tagged ones. bpf_rdonly_cast arrived in 6.2.
  auto [major, minor] = version();
  bool has_rdonly_cast = major > 6 || (major == 6 && minor >= 2);
  EXPECT_EQ(k.has(Feature::Kfunc, "bpf_rdonly_cast"), has_rdonly_cast);
  EXPECT_FALSE(k.has(Feature::Kfunc, "bpfmgr_test_no_such_kfunc"));
  if (major > 6 || (major == 6 && minor >= 9)) {
    EXPECT_FALSE(k.has(Feature::Kfunc, "tcp_sendmsg"));  // a kernel function only
  }
  // Tracepoints (tracefs, mounted as load mounts it).
  EXPECT_TRUE(k.has(Feature::Tracepoint, "sock/inet_sock_set_state"));
  EXPECT_TRUE(k.has(Feature::Tracepoint, "syscalls/sys_enter_getppid"));
  EXPECT_FALSE(k.has(Feature::Tracepoint, "bpfmgr_test/no_such_event"));
  EXPECT_FALSE(k.has(Feature::Tracepoint, "../events/sock"));
  EXPECT_FALSE(k.has(Feature::Tracepoint, "sock/inet_sock_set_state/enable"));
  EXPECT_FALSE(k.has(Feature::Tracepoint, "sock"));
  // Link types, from enum bpf_link_type; perf_event from BPF_LINK_CREATE
  // itself, which must agree with the kernel's BTF.
  EXPECT_TRUE(k.has(Feature::LinkType, "cgroup"));
  EXPECT_TRUE(k.has(Feature::LinkType, "perf_event"));
  EXPECT_EQ(k.has(Feature::LinkType, "perf_event"),
            k.has(Feature::BtfEnumValue, "BPF_LINK_TYPE_PERF_EVENT"));
  EXPECT_FALSE(k.has(Feature::LinkType, "bpfmgr_no_such_link"));
  // A kind this core does not know.
  EXPECT_FALSE(k.has(999u, "anything"));
}

// Answers are cached: a second round of the same questions costs nothing.
TEST(KernelFeatures, AnswersAreCachedAndCheap) {
  KernelFeatures k;
  std::vector<std::pair<Feature, std::string>> questions = {
      {Feature::ProgType, "sock_ops"},         {Feature::Kfunc, "bpf_rdonly_cast"},
      {Feature::BtfField, "struct tcp_sock.snd_una"},
      {Feature::Tracepoint, "sock/inet_sock_set_state"},
      {Feature::Helper, "sock_ops:bpf_get_netns_cookie"}};
  for (auto& [kind, name] : questions) k.has(kind, name);
  double first = k.probe_seconds();
  auto computed = k.answers_computed();
  for (auto& [kind, name] : questions) k.has(kind, name);
  EXPECT_EQ(k.answers_computed(), computed);
  EXPECT_EQ(k.probe_seconds(), first);
  // The whole first round, BTF read included, on a loaded 2-CPU machine.
  EXPECT_LT(first, 1.0);
}

// ------------------------------------------------------------ requirements

std::string instance(const std::string& name, const std::string& options) {
  return "\n[[instance]]\nname = \"" + name + "\"\nplugin = \"testkernel\"\n" +
         "[instance.options]\ntgid = " + std::to_string(::getpid()) + "\n" + options;
}

// The 1-based line of the first line of `text` containing `needle`.
int line_of(const std::string& text, const std::string& needle) {
  std::size_t at = text.find(needle);
  if (at == std::string::npos) return -1;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + at, '\n'));
}

// testkernel's own names (tests/core/plugins/CMakeLists.txt).
const std::vector<std::string> kOurs = {"tk_getppid", "tk_optional", "tk_stats",
                                        "testkern.rodata"};

TEST(KernelRequirements, ValidateNamesEveryMissingFeatureAtItsOptionLine) {
  PinRoot root;
  auto text = test_manifest_header(root) +
              instance("kf", "need = \"absent_kfunc\"\n") +
              instance("pt", "need = \"absent_prog_type\"\n") +
              instance("tp", "need = \"absent_tracepoint\"\n") +
              instance("fd", "need = \"absent_field\"\n") +
              instance("ok", "need = \"present\"\nbogus = 1\n");
  auto path = write_temp_file(text);
  auto r = run_bpfmgr({"validate", path});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  auto expect_at = [&](const std::string& needle, const std::string& message,
                       const std::string& hint) {
    auto where = path + ":" + std::to_string(line_of(text, needle)) + ":";
    auto at = r.err.find(where);
    ASSERT_NE(at, std::string::npos) << where << "\n" << r.err;
    auto line_end = r.err.find('\n', at);
    EXPECT_NE(r.err.substr(at, line_end - at).find(message), std::string::npos)
        << message << "\n" << r.err;
    if (!hint.empty()) {
      EXPECT_EQ(r.err.substr(line_end + 1, r.err.find('\n', line_end + 1) - line_end - 1),
                "    hint: " + hint)
          << r.err;
    }
  };
  auto tail = "; this kernel is " + release();
  expect_at("need = \"absent_kfunc\"",
            "instance 'kf' (plugin testkernel): need = \"absent_kfunc\" needs kfunc "
            "bpfmgr_test_no_such_kfunc (Linux 9.9+)" + tail,
            "use need = \"present\"");
  expect_at("need = \"absent_prog_type\"",
            "instance 'pt' (plugin testkernel): need = \"absent_prog_type\" needs program type ",
            "use need = \"present\"");
  expect_at("need = \"absent_tracepoint\"",
            "instance 'tp' (plugin testkernel): need = \"absent_tracepoint\" needs tracepoint "
            "bpfmgr_test/no_such_event" + tail,
            "use need = \"present\"");
  expect_at("need = \"absent_field\"",
            "needs kernel field struct tcp_sock.bpfmgr_no_such_field" + tail, "");
  // Every problem at once, the plugin-independent ones too.
  expect_at("bogus = 1", "unknown option 'bogus'", "");
  EXPECT_NE(r.err.find("5 errors; nothing was loaded"), std::string::npos) << r.err;

  // --json carries the same, with positions.
  auto j = run_bpfmgr({"validate", "--json", path});
  EXPECT_EQ(j.exit_code, 2);
  auto errors = json::parse(j.out)["errors"];
  EXPECT_EQ(errors.size(), 5u) << j.out;
  bool kfunc_seen = false;
  for (auto& e : errors)
    if (e["message"].get<std::string>().find("bpfmgr_test_no_such_kfunc") != std::string::npos) {
      kfunc_seen = true;
      EXPECT_EQ(e["line"], line_of(text, "need = \"absent_kfunc\""));
      EXPECT_EQ(e["hint"], "use need = \"present\"");
    }
  EXPECT_TRUE(kfunc_seen) << j.out;
}

TEST(KernelRequirements, AFeatureOfAnUnknownKindIsRefused) {
  PinRoot root;
  auto r = run_bpfmgr({"validate", write_temp_file(test_manifest_header(root) +
                                                   instance("u", "need = \"unknown_kind\"\n"))});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("needs feature anything of unknown kind 999"), std::string::npos)
      << r.err;
}

TEST(KernelRequirements, LoadRefusesBeforeAnythingIsStaged) {
  auto before = KernelObjects::settled(kOurs);
  PinRoot root;
  // A good instance first: nothing of it may be loaded either.
  auto r = run_bpfmgr({"load", write_temp_file(test_manifest_header(root) +
                                               instance("good", "") +
                                               instance("bad", "need = \"absent_field\"\n"))});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("struct tcp_sock.bpfmgr_no_such_field"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nothing was loaded"), std::string::npos) << r.err;
  EXPECT_TRUE(pins_under(root.path()).empty());
  EXPECT_FALSE(fs::exists(root.path() + "/good"));
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

TEST(KernelRequirements, DegradationAndTypedMetricsShowInStatusJsonAndMetrics) {
  auto before = KernelObjects::settled(kOurs);
  {
    PinRoot root;
    auto text = test_manifest_header(root) + instance("deg", "") +
                instance("full", "optional_hook = false\nmetric_label = \"syscall\"\n");
    auto v = run_bpfmgr({"validate", write_temp_file(text)});
    ASSERT_EQ(v.exit_code, 0) << v.err;
    EXPECT_NE(v.out.find("instance 'deg' will run without the optional hook on this kernel (" +
                         release() + "): this kernel has no tracepoint bpfmgr_test/no_such_event"),
              std::string::npos)
        << v.out;
    EXPECT_EQ(v.out.find("instance 'full' will run"), std::string::npos) << v.out;

    auto r = run_bpfmgr({"load", write_temp_file(text)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (int i = 0; i < 3; ++i) ::getppid();

    auto st = run_bpfmgr({"status", "--pin-root", root.path()});
    ASSERT_EQ(st.exit_code, 0) << st.err;
    EXPECT_NE(st.out.find("degraded: running without the optional hook because this kernel "
                          "has no tracepoint bpfmgr_test/no_such_event"),
              std::string::npos)
        << st.out;
    EXPECT_NE(st.out.find("calls{mode=\"getppid\"} 3 (counter)"), std::string::npos) << st.out;

    auto sj = run_bpfmgr({"status", "--json", "--pin-root", root.path()});
    ASSERT_EQ(sj.exit_code, 0) << sj.err;
    auto status = json::parse(sj.out);
    std::map<std::string, json> by_name;
    for (auto& i : status["instances"]) by_name[i["instance"].get<std::string>()] = i;
    ASSERT_EQ(by_name.size(), 2u) << sj.out;
    auto& deg = by_name["deg"];
    ASSERT_EQ(deg["degraded"].size(), 1u) << deg.dump(2);
    EXPECT_EQ(deg["degraded"][0]["what"], "without the optional hook");
    EXPECT_TRUE(by_name["full"]["degraded"].empty()) << by_name["full"].dump(2);
    // The optional program was not loaded: no hook, no pin.
    for (auto& p : deg["programs"]) EXPECT_NE(p["name"], "tk_optional") << deg.dump(2);
    EXPECT_EQ(deg["details"]["kernel"], release());
    bool calls_seen = false;
    for (auto& m : deg["metrics"])
      if (m["name"] == "calls") {
        calls_seen = true;
        EXPECT_EQ(m["kind"], "counter");
        EXPECT_EQ(m["labels"]["mode"], "getppid");
        EXPECT_EQ(m["value"].get<double>(), 3.0);
      }
    EXPECT_TRUE(calls_seen) << deg.dump(2);

    // /metrics, rendered as serve renders it.
    PluginRegistry registry;
    auto text_metrics = render_metrics(root.path(), ServeStats{}, registry);
    auto has = [&](const std::string& line) {
      EXPECT_NE(text_metrics.find(line + "\n"), std::string::npos) << line << "\n"
                                                                     << text_metrics;
    };
    has("# TYPE bpfmgr_instance_degraded gauge");
    has("bpfmgr_instance_degraded{instance_name=\"deg\",plugin=\"testkernel\","
        "what=\"without the optional hook\"} 1");
    EXPECT_EQ(text_metrics.find("bpfmgr_instance_degraded{instance_name=\"full\""),
              std::string::npos);
    has("# HELP bpfmgr_plugin_testkernel_calls_total getppid() calls counted");
    has("# TYPE bpfmgr_plugin_testkernel_calls_total counter");
    has("bpfmgr_plugin_testkernel_calls_total{instance_name=\"deg\",mode=\"getppid\"} 3");
    has("# TYPE bpfmgr_plugin_testkernel_last_pid gauge");
    has("bpfmgr_plugin_testkernel_last_pid{instance_name=\"deg\"} " +
        std::to_string(::getpid()));
    // "full" labels its counter differently: one family keeps one label set,
    // the disagreeing sample is dropped, the rest of the page stays.
    EXPECT_EQ(text_metrics.find("syscall=\"getppid\""), std::string::npos) << text_metrics;
    has("bpfmgr_plugin_testkernel_last_pid{instance_name=\"full\"} " +
        std::to_string(::getpid()));

    ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
  }
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

TEST(KernelRequirements, AMetricWithACoreLabelIsRefused) {
  auto before = KernelObjects::settled(kOurs);
  {
    PinRoot root;
    auto r = run_bpfmgr({"load", write_temp_file(test_manifest_header(root) +
                                                 instance("m", "metric_label = \"instance\"\n"))});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto sj = run_bpfmgr({"status", "--json", "--pin-root", root.path()});
    auto inst = json::parse(sj.out)["instances"][0];
    EXPECT_NE(inst.value("status_error", "").find("label 'instance' is bpfmgr's or "
                                                  "Prometheus's own"),
              std::string::npos)
        << inst.dump(2);
    ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
  }
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

// before_load runs while the manifest is resolved (the instance's spec is
// built once, for validate and load alike): its failure is reported at the
// instance's plugin line, by validate too, and nothing is loaded.
TEST(KernelRequirements, RequireOutsideKernelRequirementsFailsTheHook) {
  auto before = KernelObjects::settled(kOurs);
  PinRoot root;
  auto file = write_temp_file(test_manifest_header(root) + instance("x", "misuse = true\n"));
  for (const char* command : {"validate", "load"}) {
    auto r = run_bpfmgr({command, file});
    EXPECT_EQ(r.exit_code, 2) << command << ": " << r.err;
    EXPECT_NE(r.err.find(":6:10: error: instance 'x' (plugin testkernel): before_load: "
                         "require() is only allowed in kernel_requirements"),
              std::string::npos)
        << command << ": " << r.err;
  }
  EXPECT_TRUE(pins_under(root.path()).empty());
  EXPECT_EQ(before.diff_settled(kOurs), "");
}

TEST(KernelRequirements, PluginsShowsWhatThisKernelCannotRunAndWhy) {
  auto r = run_bpfmgr({"plugins", "--json", "--path", test_plugin_dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto all = json::parse(r.out);
  EXPECT_EQ(all["kernel"], release());
  json plugin;
  for (auto& p : all["plugins"])
    if (p["name"] == "testkernel") plugin = p;
  ASSERT_TRUE(plugin.is_object()) << r.out;
  // Options with their defaults, ranges and choices.
  json tgid, need;
  for (auto& o : plugin["options"]) {
    if (o["name"] == "tgid") tgid = o;
    if (o["name"] == "need") need = o;
  }
  EXPECT_EQ(tgid["default"], 0);
  EXPECT_EQ(tgid["min"], 0);
  EXPECT_EQ(tgid["max"], 4194304);
  EXPECT_EQ(need["default"], "present");
  EXPECT_EQ(need["choices"].size(), 6u);
  // With its defaults: usable, without the optional hook.
  auto& k = plugin["kernel"];
  EXPECT_TRUE(k["declared"].get<bool>());
  EXPECT_TRUE(k["defaults"]["usable"].get<bool>()) << k.dump(2);
  ASSERT_EQ(k["defaults"]["degraded"].size(), 1u) << k.dump(2);
  // Each value of each choice and bool option, with what it lacks.
  std::map<std::string, json> by_value;
  for (auto& v : k["options"]["need"]) by_value[v["value"].get<std::string>()] = v;
  EXPECT_EQ(by_value.size(), 6u) << k.dump(2);
  EXPECT_TRUE(by_value["present"]["usable"].get<bool>());
  auto& kf = by_value["absent_kfunc"];
  EXPECT_FALSE(kf["usable"].get<bool>());
  ASSERT_EQ(kf["unmet"].size(), 1u) << kf.dump(2);
  EXPECT_EQ(kf["unmet"][0]["kind"], "kfunc");
  EXPECT_EQ(kf["unmet"][0]["name"], "bpfmgr_test_no_such_kfunc");
  EXPECT_EQ(kf["unmet"][0]["key"], "need");
  EXPECT_EQ(kf["unmet"][0]["since"], "9.9");
  EXPECT_EQ(kf["unmet"][0]["hint"], "use need = \"present\"");
  for (auto& v : k["options"]["optional_hook"])
    EXPECT_EQ(v["degraded"].size(), v["value"].get<bool>() ? 1u : 0u) << v.dump(2);

  auto text = run_bpfmgr({"plugins", "--path", test_plugin_dir()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (auto line :
       {"on this kernel, with defaults: usable; runs without the optional hook (this kernel "
        "has no tracepoint bpfmgr_test/no_such_event)",
        "option tgid               an integer, default 0, 0..4194304: only count this process",
        "need = \"absent_kfunc\": NOT usable: needs kfunc bpfmgr_test_no_such_kfunc (Linux "
        "9.9+) [use need = \"present\"]",
        "optional_hook = false: usable\n"})
    EXPECT_NE(text.out.find(line), std::string::npos) << line << "\n" << text.out;
}

}  // namespace
}  // namespace bpfmgr::test
