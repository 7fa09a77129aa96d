// probes_bench: a test-only plugin (not installed) holding what
// bench/probes compares the probes plugin with: empty programs on the
// syscall hooks, and a producer that pushes records through the probes ring
// code to `bpfmgr events`. Its records are probes records, formatted by the
// probes formatter, so `bpfmgr events` does exactly the work it does for
// the plugin.
#include <bpfmgr/plugin.hpp>

#include <algorithm>

#include "probes_bench.skel.h"
#include "probes_format.hpp"

namespace bpfmgr::probes::bench {
namespace {

constexpr const char* kEmpty[] = {"bench_empty_enter", "bench_empty_exit"};
constexpr const char* kBurst = "bench_burst";

class ProbesBenchPlugin final : public Plugin {
 public:
  PluginInfo info() const override {
    return {"probes_bench", "0.1.0",
            "benchmark baseline and event producer for bench/probes (test only)"};
  }

  std::span<const std::byte> bpf_object() const override {
    std::size_t sz = 0;
    const void* data = probes_bench_bpf__elf_bytes(&sz);
    return {static_cast<const std::byte*>(data), sz};
  }

  std::vector<OptionSpec> option_schema() const override {
    return {
        {"mode", OptionType::String,
         "empty: empty programs on raw_tp sys_enter/sys_exit; burst: `burst` probes "
         "records per write() of process `pid`",
         std::string("empty"), {}, {}, {"empty", "burst"}},
        {"pid", OptionType::Int, "burst: the producing process (tgid)", std::int64_t{0}, 0,
         4194304, {}},
        {"burst", OptionType::Int, "burst: records per write()", std::int64_t{1}, 1, 64, {}},
        {"ring_buffer_kb", OptionType::Int, "ring buffer size in KiB (power of two)",
         std::int64_t{1024}, 4, 1 << 20, {}},
        {"ring_buffer_wakeup_kb", OptionType::Int,
         "as the probes option: wake the reader once this many KiB wait",
         std::int64_t{64}, 0, 1 << 19, {}},
    };
  }

  std::vector<OptionProblem> validate(const Options& o) const override {
    std::vector<OptionProblem> p;
    auto kb = o.get_int("ring_buffer_kb");
    if (kb & (kb - 1)) p.push_back({"ring_buffer_kb", "must be a power of two", ""});
    if (o.get_string("mode") == "burst" && o.get_int("pid") == 0)
      p.push_back({"pid", "burst needs the producing process", ""});
    return p;
  }

  void before_load(InstanceContext& ctx) override {
    const Options& o = ctx.options();
    bool burst = o.get_string("mode") == "burst";
    ctx.set_global("burst_tgid", std::uint32_t(o.get_int("pid")));
    ctx.set_global("burst", std::uint32_t(o.get_int("burst")));
    ctx.set_max_entries("events", std::uint32_t(o.get_int("ring_buffer_kb")) * 1024);
    ctx.set_global("wakeup_bytes",
                   std::uint64_t(std::min(o.get_int("ring_buffer_wakeup_kb"),
                                          o.get_int("ring_buffer_kb") / 4)) *
                       1024);
    for (auto* p : kEmpty) ctx.set_autoload(p, !burst);
    ctx.set_autoload(kBurst, burst);
  }

  void attach(InstanceContext& ctx) override {
    bool burst = ctx.options().get_string("mode") == "burst";
    if (burst) {
      ctx.attach_auto(kBurst, false);
    } else {
      for (auto* p : kEmpty) ctx.attach_auto(p, false);
    }
  }

  std::optional<std::string> events_map() const override { return "events"; }

  std::unique_ptr<EventFormatter> event_formatter(const Options&) const override {
    return std::make_unique<ProbesFormatter>();
  }
};

}  // namespace
}  // namespace bpfmgr::probes::bench

BPFMGR_PLUGIN(bpfmgr::probes::bench::ProbesBenchPlugin)
