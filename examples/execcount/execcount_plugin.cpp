// execcount: the smallest useful bpfmgr plugin, built out of tree.
#include <bpf/bpf.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <bpfmgr/plugin.hpp>

#include "execcount.h"
#include "execcount.skel.h"

namespace {

class ExecCount final : public bpfmgr::Plugin {
 public:
  bpfmgr::PluginInfo info() const override {
    return {"execcount", "0.1.0", "counts program executions per command"};
  }
  std::span<const std::byte> bpf_object() const override {
    std::size_t size = 0;
    auto* data = execcount_bpf__elf_bytes(&size);
    return {static_cast<const std::byte*>(data), size};
  }
  std::vector<bpfmgr::OptionSpec> option_schema() const override {
    return {{"uid", bpfmgr::OptionType::Int, "count only this user's executions (-1: all)",
             std::int64_t{-1}, -1, 4294967294LL, {}}};
  }
  void before_load(bpfmgr::InstanceContext& ctx) override {
    ctx.set_global("only_uid", std::int64_t{ctx.options().get_int("uid")});
  }
  bpfmgr::StatusReport status(bpfmgr::PinnedContext& ctx) const override {
    // The five busiest commands, as counters.
    int fd = ctx.map_fd("execs");
    std::vector<std::pair<std::uint64_t, std::string>> rows;
    exec_key key{}, next{};
    exec_key* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      exec_stats v{};
      if (bpf_map_lookup_elem(fd, &next, &v) == 0)
        rows.emplace_back(v.execs, std::string(next.comm, strnlen(next.comm, sizeof next.comm)));
      key = next;
      prev = &key;
    }
    std::sort(rows.rbegin(), rows.rend());
    bpfmgr::StatusReport r;
    for (std::size_t i = 0; i < rows.size() && i < 5; ++i)
      r.counters.push_back({"execs." + rows[i].second, rows[i].first, {}});
    r.details.push_back({"commands seen", std::to_string(rows.size())});
    return r;
  }
};

}  // namespace

BPFMGR_PLUGIN(ExecCount)
