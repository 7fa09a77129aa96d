// Test plugin for plugin API 2.2 (not installed): testcount's BPF program,
// with options that make it need kernel features this kernel has or lacks,
// run a simpler form (its optional hook left out), report typed metrics and
// misuse the API, so the core's side of each can be checked for real.
#include <bpfmgr/plugin.hpp>

#include "testkernel.skel.h"

namespace {

using bpfmgr::Feature;

// The optional hook's tracepoint: no kernel has it.
constexpr const char* kOptionalTracepoint = "bpfmgr_test/no_such_event";

class TestKernelPlugin final : public bpfmgr::Plugin {
 public:
  bpfmgr::PluginInfo info() const override {
    return {"testkernel", "2.2.0", "counts getppid() calls; needs what its options say"};
  }
  std::span<const std::byte> bpf_object() const override {
    std::size_t size = 0;
    auto* data = testkernel_bpf__elf_bytes(&size);
    return {static_cast<const std::byte*>(data), size};
  }
  std::vector<bpfmgr::OptionSpec> option_schema() const override {
    return {
        {"tgid", bpfmgr::OptionType::Int, "only count this process (0: all)",
         std::int64_t{0}, 0, 4194304, {}},
        {"need", bpfmgr::OptionType::String, "what to need from the kernel",
         std::string("present"), {}, {},
         {"present", "absent_kfunc", "absent_prog_type", "absent_tracepoint",
          "absent_field", "unknown_kind"}},
        {"optional_hook", bpfmgr::OptionType::Bool,
         "attach the optional hook where the kernel has its tracepoint", true, {}, {}, {}},
        {"misuse", bpfmgr::OptionType::Bool, "call require() from before_load", false,
         {}, {}, {}},
        {"metric_label", bpfmgr::OptionType::String,
         "label name of the `calls` metric (a bad one is refused)", std::string("mode"),
         {}, {}, {}},
    };
  }

  void kernel_requirements(const bpfmgr::Options& o, bpfmgr::KernelNeeds& k) const override {
    const auto& need = o.get_string("need");
    const std::string hint = "use need = \"present\"";
    // What the program always needs (all present on every kernel bpfmgr runs on).
    k.require(Feature::ProgType, "tracepoint");
    k.require(Feature::MapType, "hash");
    k.require(Feature::Helper, "tracepoint:bpf_get_current_pid_tgid");
    k.require(Feature::Tracepoint, "syscalls/sys_enter_getppid");
    k.require(Feature::LinkType, "perf_event");
    if (need == "absent_kfunc")
      k.require(Feature::Kfunc, "bpfmgr_test_no_such_kfunc", "need", "9.9", hint);
    if (need == "absent_prog_type")
      k.require(Feature::ProgType, k.has(Feature::ProgType, "lsm") ? "bpfmgr_no_such_type" : "lsm",
                "need", "5.7", hint);
    if (need == "absent_tracepoint")
      k.require(Feature::Tracepoint, "bpfmgr_test/no_such_event", "need", "", hint);
    if (need == "absent_field")
      k.require(Feature::BtfField, "struct tcp_sock.bpfmgr_no_such_field", "need", "", hint);
    if (need == "unknown_kind") k.require(static_cast<Feature>(999), "anything", "need");
    if (o.get_bool("optional_hook") && !k.has(Feature::Tracepoint, kOptionalTracepoint))
      k.degrade("without the optional hook",
                std::string("this kernel has no tracepoint ") + kOptionalTracepoint);
  }

  void before_load(bpfmgr::InstanceContext& ctx) override {
    const auto& o = ctx.options();
    ctx.set_global("target_tgid", static_cast<std::uint32_t>(o.get_int("tgid")));
    // Decides as kernel_requirements did, from the same view.
    attach_optional_ = o.get_bool("optional_hook") &&
                       ctx.kernel().has(Feature::Tracepoint, kOptionalTracepoint);
    if (!attach_optional_) ctx.set_autoload("tk_optional", false);
    if (o.get_bool("misuse")) {
      // require() belongs to kernel_requirements: the core refuses it here.
      auto* k = const_cast<bpfmgr_kernel*>(RawKernel(ctx.kernel()).raw());
      k->ops->require(k, BPFMGR_FEATURE_KFUNC, "bpf_rdonly_cast", nullptr, nullptr, nullptr);
    }
  }
  void attach(bpfmgr::InstanceContext& ctx) override {
    if (attach_optional_) ctx.attach_auto("tk_optional", true);
  }

  bpfmgr::StatusReport status(bpfmgr::PinnedContext& ctx) const override {
    bpfmgr::StatusReport r;
    std::uint32_t key = 0;
    struct {
      std::uint64_t calls, last_pid;
    } v{};
    if (bpf_map_lookup_elem(ctx.map_fd("tk_stats"), &key, &v) == 0)
      r.counters.push_back({"getppid_calls", v.calls, {}});
    r.metrics.push_back({"calls", bpfmgr::MetricKind::Counter, double(v.calls),
                         {{ctx.options().get_string("metric_label"), "getppid"}},
                         "getppid() calls counted"});
    r.metrics.push_back({"last_pid", bpfmgr::MetricKind::Gauge, double(v.last_pid), {}, ""});
    r.details.push_back({"kernel", ctx.kernel().release()});
    return r;
  }

 private:
  // The C view under a KernelView, as a C plugin holds it.
  struct RawKernel : bpfmgr::KernelView {
    explicit RawKernel(const bpfmgr::KernelView& v) : KernelView(v) {}
    const bpfmgr_kernel* raw() const { return k_; }
  };
  bool attach_optional_ = false;
};

}  // namespace

BPFMGR_PLUGIN(TestKernelPlugin)
