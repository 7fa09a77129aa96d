// Test plugin for the core's tests (not installed). See testcount.bpf.c.
#include <bpfmgr/plugin.hpp>

#include <csignal>
#include <stdexcept>

#include TESTCOUNT_SKELETON

#ifdef TESTCOUNT_DEP
extern "C" int bpfmgr_testdep_value(void);
#endif

namespace {

class TestCountPlugin final : public bpfmgr::Plugin {
 public:
  bpfmgr::PluginInfo info() const override {
    return {TESTCOUNT_NAME, "1.2.3", "counts getppid() calls (core tests)"};
  }
  std::span<const std::byte> bpf_object() const override {
    std::size_t size = 0;
    auto* data = TESTCOUNT_ELF_BYTES(&size);
    return {static_cast<const std::byte*>(data), size};
  }
  std::vector<bpfmgr::OptionSpec> option_schema() const override {
    return {
        {"tgid", bpfmgr::OptionType::Int, "only count this process (0: all)",
         std::int64_t{0}, 0, 4194304, {}},
        {"max_entries", bpfmgr::OptionType::Int, "size of the stats map",
         std::int64_t{64}, 1, 65536, {}},
        {"mode", bpfmgr::OptionType::String, "how to count", std::string("calls"),
         {}, {}, {"calls", "bytes"}},
        {"cgroup", bpfmgr::OptionType::String,
         "cgroup for the egress program (variant with -DTESTCOUNT_CGROUP)",
         std::string(""), {}, {}, {}},
    };
  }
  std::vector<bpfmgr::OptionProblem> validate(
      const bpfmgr::Options& o) const override {
    if (o.get_string("mode") == "bytes" && o.get_int("tgid") == 0)
      return {{"mode", "mode 'bytes' needs a tgid", "set tgid = <pid>"}};
    return {};
  }
  void before_load(bpfmgr::InstanceContext& ctx) override {
#ifdef TESTCOUNT_CRASH_BEFORE_LOAD
    std::raise(SIGSEGV);  // before anything is pinned
#endif
#ifdef TESTCOUNT_DEP
    if (bpfmgr_testdep_value() != 42) throw std::runtime_error("testdep is not itself");
#endif
#ifdef TESTCOUNT_BEFORE_UNPIN
    bpfmgr::log_info(ctx.instance_name() + ": before_load");  // counted by the loader tests
#endif
    ctx.set_global("target_tgid", static_cast<std::uint32_t>(ctx.options().get_int("tgid")));
    ctx.set_max_entries("stats", static_cast<std::uint32_t>(ctx.options().get_int("max_entries")));
  }
  void attach(bpfmgr::InstanceContext& ctx) override {
    ctx.attach_auto("optional_missing", /*optional=*/true);
#ifdef TESTCOUNT_CGROUP
    ctx.attach_cgroup("egress", ctx.options().get_string("cgroup"));
#endif
#ifdef TESTCOUNT_THROW
    // After a link exists: the rollback has something to undo.
    ctx.attach_auto("count_getppid", false);
    throw 42;  // not a std::exception
#endif
#if defined(TESTCOUNT_CRASH) || defined(TESTCOUNT_CRASH_ATTACH)
    ctx.attach_auto("count_getppid", false);
#endif
#ifdef TESTCOUNT_CRASH_ATTACH
    std::raise(SIGSEGV);  // with a link nothing pinned yet: it dies with the process
#endif
  }
  // The load-time context names the same pins as the status one (tests
  // compare this line with status details).
  void after_attach(bpfmgr::InstanceContext& ctx) override {
    bpfmgr::log_info(ctx.instance_name() + " pins: map " + ctx.map_pin_path("stats") +
                     " prog " + ctx.prog_pin_path("count_getppid") + " link " +
                     ctx.link_pin_path("count_getppid"));
#ifdef TESTCOUNT_CRASH
    // The process dies with its staged maps, programs and a live link
    // pinned: what a bug in a plugin (or SIGKILL) leaves behind.
    std::raise(SIGSEGV);
#endif
  }
#ifdef TESTCOUNT_BEFORE_UNPIN
  void before_unpin(bpfmgr::PinnedContext& ctx) override {
    bpfmgr::log_info(ctx.instance_name() + ": before_unpin");
  }
#endif
  bpfmgr::StatusReport status(bpfmgr::PinnedContext& ctx) const override {
    bpfmgr::StatusReport r;
    std::uint32_t key = 0;
    struct {
      std::uint64_t calls, last_pid;
    } v{};
    if (bpf_map_lookup_elem(ctx.map_fd("stats"), &key, &v) == 0)
      r.counters.push_back({"getppid_calls", v.calls, {}});
    r.details.push_back({"mode", ctx.options().get_string("mode")});
    r.details.push_back({"stats_pin", ctx.map_pin_path("stats")});
    r.details.push_back({"prog_pin", ctx.prog_pin_path("count_getppid")});
    r.details.push_back({"link_pin", ctx.link_pin_path("count_getppid")});
    return r;
  }
};

}  // namespace

BPFMGR_PLUGIN(TestCountPlugin)
