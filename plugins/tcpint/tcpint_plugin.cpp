// tcpint plugin: options, load-time settings, attachment and status (its
// benchmark is bench/tcpint, outside the shipped plugin).
// The BPF side is tcpint.bpf.c; the contract between both is tcpint.h.
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <bpfmgr/plugin.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tcpint.h"
#include "tcpint.skel.h"
#include "tcpint_options.hpp"

namespace {

using bpfmgr::Error;
using bpfmgr::Feature;
using bpfmgr::OptionSpec;
using bpfmgr::OptionType;
namespace fs = std::filesystem;

// The wire struct and map structs are the kernel/user contract.
static_assert(sizeof(tcpint_opt) == TCPINT_OPT_LEN);
static_assert(offsetof(tcpint_opt, exid) == 2);
static_assert(offsetof(tcpint_opt, version) == 4);
static_assert(offsetof(tcpint_opt, sender_id) == 6);
static_assert(offsetof(tcpint_opt, trace_id) == 8);
static_assert(offsetof(tcpint_opt, msg_count) == 12);
static_assert(offsetof(tcpint_opt, send_ts_us) == 16);
static_assert(sizeof(tcpint_tuple) == 40);
static_assert(sizeof(tcpint_tx_ctx) == 72);
static_assert(sizeof(tcpint_rx_ctx) == 48);
static_assert(sizeof(tcpint_cidr_key) == 20);
static_assert(TCPINT_C_MAX == 12);

constexpr const char* kCounterNames[TCPINT_C_MAX] = {
    "options_written", "options_parsed", "rejected_magic", "rejected_len",
    "no_room",         "tx_flows",       "rx_flows",       "no_context",
    "syscall_updates", "inherited",      "helper_errors", "deferred_full"};

const char* helper_name(std::uint32_t h) {
  switch (h) {
    case TCPINT_H_RESERVE: return "bpf_reserve_hdr_opt";
    case TCPINT_H_STORE: return "bpf_store_hdr_opt";
    case TCPINT_H_LOAD: return "bpf_load_hdr_opt";
    case TCPINT_H_CB_FLAGS: return "bpf_sock_ops_cb_flags_set";
    case TCPINT_H_MAP_UPDATE: return "bpf_map_update_elem";
  }
  return "helper?";
}

// ------------------------------------------------------- kernel variants
// Which form of each program this kernel runs. One function decides, for
// kernel_requirements() (validate, load) and before_load()/attach() alike.
struct Variants {
  // sock_ops calls bpf_get_current_pid_tgid (6.10+) and
  // bpf_get_current_comm (6.16+) at connect; else it reads the task with
  // bpf_get_current_task + bpf_probe_read_kernel (same data).
  bool sockops_task_helpers = true;
  // tcpint_sys_enter (direct BTF loads through the bpf_rdonly_cast kfunc,
  // 6.2+) instead of tcpint_sys_enter_probe (bpf_probe_read_kernel).
  bool syscall_direct = true;
};

constexpr const char* kRdonlyCast = "bpf_rdonly_cast";

// The core's probe answers both (its helper probe also knows the refusal
// wording 6.12 uses for these two in sock_ops, which libbpf 1.1 misreads).
Variants choose_variants(const bpfmgr::KernelView* k, bool force_fallbacks) {
  if (force_fallbacks) return {false, false};
  Variants v;
  v.sockops_task_helpers = k->has(Feature::Helper, "sock_ops:bpf_get_current_pid_tgid") &&
                           k->has(Feature::Helper, "sock_ops:bpf_get_current_comm");
  v.syscall_direct = k->has(Feature::Kfunc, kRdonlyCast);
  return v;
}

Variants variants_for(const bpfmgr::ContextBase& ctx, const tcpint::Settings& s) {
  bpfmgr::KernelView view = ctx.kernel();
  return choose_variants(&view, s.force_fallbacks);
}

class TcpintPlugin final : public bpfmgr::Plugin {
 public:
  bpfmgr::PluginInfo info() const override {
    return {"tcpint", "0.1.0",
            "In-band flow context (trace id, sender, message counter, send "
            "time) carried in an experimental TCP header option"};
  }

  std::span<const std::byte> bpf_object() const override {
    std::size_t n = 0;
    const void* p = tcpint_bpf__elf_bytes(&n);
    return {static_cast<const std::byte*>(p), n};
  }

  std::vector<OptionSpec> option_schema() const override {
    return tcpint::option_schema();
  }

  std::vector<bpfmgr::OptionProblem> validate(
      const bpfmgr::Options& o) const override {
    return tcpint::validate(o);
  }

  // What each program needs; docs/tcpint.md lists the same, per program.
  void kernel_requirements(const bpfmgr::Options& o,
                           bpfmgr::KernelNeeds& k) const override {
    // Invalid options are validate()'s to report, once: no needs to add.
    for (const auto& p : tcpint::validate(o))
      if (p.key != "cgroup") return;
    auto s = tcpint::settings_from(o, "", "", /*resolve_cgroup=*/false);
    Variants v = choose_variants(&k, s.force_fallbacks);
    k.require(Feature::ProgType, "sock_ops");
    k.require(Feature::BtfEnumValue, "BPF_SOCK_OPS_HDR_OPT_LEN_CB", "", "5.10");
    for (const char* h : {"bpf_reserve_hdr_opt", "bpf_store_hdr_opt", "bpf_load_hdr_opt"})
      k.require(Feature::Helper, std::string("sock_ops:") + h, "", "5.10");
    k.require(Feature::Helper, "sock_ops:bpf_sk_storage_get");
    k.require(Feature::Helper, "sock_ops:bpf_sock_ops_cb_flags_set");
    k.require(Feature::Helper, "sock_ops:bpf_loop", "", "5.17");
    k.require(Feature::Helper, "sock_ops:bpf_ktime_get_tai_ns", "", "6.1");
    for (const char* m : {"lru_hash", "hash", "lpm_trie", "sk_storage", "percpu_array"})
      k.require(Feature::MapType, m);
    if (!v.sockops_task_helpers) {
      k.require(Feature::Helper, "sock_ops:bpf_get_current_task");
      k.require(Feature::Helper, "sock_ops:bpf_probe_read_kernel");
      k.require(Feature::Helper, "sock_ops:bpf_probe_read_kernel_str");
      k.degrade("sock_ops reads the connecting task (pid, comm) with bpf_probe_read_kernel",
                s.force_fallbacks ? "fallbacks = \"always\""
                                  : "sock_ops cannot call bpf_get_current_pid_tgid (Linux "
                                    "6.10+) and bpf_get_current_comm (6.16+) here");
    }
    if (!s.syscall_hooks) return;
    const std::string hooks = "syscall_hooks", off = "set syscall_hooks = false";
    k.require(Feature::ProgType, "raw_tracepoint", hooks, "", off);
    for (const char* h : {"bpf_get_current_ancestor_cgroup_id", "bpf_get_current_pid_tgid",
                          "bpf_get_current_comm", "bpf_probe_read_user"})
      k.require(Feature::Helper, std::string("raw_tracepoint:") + h, hooks, "", off);
    if (v.syscall_direct) {
      k.require(Feature::Helper, "raw_tracepoint:bpf_get_current_task_btf", hooks, "5.11", off);
    } else {
      k.require(Feature::Helper, "raw_tracepoint:bpf_get_current_task", hooks, "", off);
      k.require(Feature::Helper, "raw_tracepoint:bpf_probe_read_kernel", hooks, "", off);
      k.degrade("tcpint_sys_enter_probe: the fd -> socket walk reads with "
                "bpf_probe_read_kernel (more time per traced syscall)",
                s.force_fallbacks ? "fallbacks = \"always\""
                                  : "no kfunc bpf_rdonly_cast (Linux 6.2+)");
    }
  }

  void before_load(bpfmgr::InstanceContext& ctx) override {
    const auto& o = ctx.options();
    auto s = tcpint::settings_from(o, ctx.cgroup2_root(), ctx.instance_name());
    Variants v = variants_for(ctx, s);
    ctx.set_global("sockops_task_helpers", v.sockops_task_helpers);
    ctx.set_global("opt_kind", s.kind);
    ctx.set_global("opt_exid", s.exid);
    ctx.set_global("sender_id", s.sender_id);
    ctx.set_global("segments", s.segments);
    ctx.set_global("filter_ports", static_cast<bool>(!s.ports.empty()));
    ctx.set_global("filter_cidrs", static_cast<bool>(!s.cidrs.empty()));
    ctx.set_global("propagate", s.propagate);
    ctx.set_global("cgroup_level", s.cgroup_level);
    ctx.set_global("cgroup_id", s.cgroup_id);
    // Without the syscall hook propagating traces, nothing changes a flow's
    // trace id or flags after its handshake.
    ctx.set_global("ctx_static", static_cast<bool>(!(s.syscall_hooks && s.propagate)));
    ctx.set_max_entries("flow_context_map", s.max_flows);
    ctx.set_max_entries("rx_context_map", s.max_flows);
    ctx.set_autoload("tcpint_sys_enter", s.syscall_hooks && v.syscall_direct);
    ctx.set_autoload("tcpint_sys_enter_probe", s.syscall_hooks && !v.syscall_direct);
  }

  void after_load(bpfmgr::InstanceContext& ctx) override {
    auto s = tcpint::settings_from(ctx.options(), ctx.cgroup2_root(),
                                   ctx.instance_name());
    int pfd = ctx.map_fd("port_filter");
    for (std::uint16_t port : s.ports) {
      std::uint8_t one = 1;
      if (bpf_map_update_elem(pfd, &port, &one, BPF_ANY))
        throw Error("tcpint: cannot fill port_filter: " +
                    std::string(std::strerror(errno)));
    }
    int cfd = ctx.map_fd("cidr_filter");
    for (const auto& key : s.cidrs) {
      std::uint8_t one = 1;
      if (bpf_map_update_elem(cfd, &key, &one, BPF_ANY))
        throw Error("tcpint: cannot fill cidr_filter: " +
                    std::string(std::strerror(errno)));
    }
  }

  void attach(bpfmgr::InstanceContext& ctx) override {
    auto s = tcpint::settings_from(ctx.options(), ctx.cgroup2_root(),
                                   ctx.instance_name());
    ctx.attach_cgroup("tcpint_sockops", s.cgroup_path);
    // The syscall hook only refines the context (process, messages,
    // bytes); without it options still flow, so a failure is not fatal.
    if (s.syscall_hooks)
      ctx.attach_auto(variants_for(ctx, s).syscall_direct ? "tcpint_sys_enter"
                                                       : "tcpint_sys_enter_probe",
                      true);
  }

  bpfmgr::StatusReport status(bpfmgr::PinnedContext& ctx) const override {
    bpfmgr::StatusReport r;
    int cfd = ctx.map_fd("counters");
    for (std::uint32_t k = 0; k < TCPINT_C_MAX; ++k)
      r.counters.push_back(bpfmgr::percpu_counter(
          kCounterNames[k], bpfmgr::read_percpu<std::uint64_t>(cfd, k)));
    // Flow tables: how many, how many still open.
    auto count_flows = [&](const char* map, auto value_type_tag) {
      using V = decltype(value_type_tag);
      int fd = ctx.map_fd(map);
      tcpint_tuple key{}, next{};
      V v{};
      std::uint64_t total = 0, open = 0;
      const void* prev = nullptr;
      while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        key = next;
        prev = &key;
        if (bpf_map_lookup_elem(fd, &key, &v) == 0) {
          ++total;
          if (v.closed_ns == 0) ++open;
        }
      }
      r.details.emplace_back(map, std::to_string(total) + " flows (" +
                                      std::to_string(open) + " open)");
    };
    count_flows("flow_context_map", tcpint_tx_ctx{});
    count_flows("rx_context_map", tcpint_rx_ctx{});
    int efd = ctx.map_fd("helper_errors");
    tcpint_helper_err ek{}, en{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(efd, prev, &en) == 0) {
      ek = en;
      prev = &ek;
      std::uint64_t n = 0;
      if (bpf_map_lookup_elem(efd, &ek, &n) == 0)
        r.details.emplace_back(std::string("error ") + helper_name(ek.helper),
                               "-" + std::string(strerrorname(ek.err)) + " x" +
                                   std::to_string(n));
    }
    auto s = tcpint::settings_from(ctx.options(), "", ctx.instance_name(),
                                   /*resolve_cgroup=*/false);
    std::ostringstream opt;
    opt << "kind " << int(s.kind) << " exid 0x" << std::hex << s.exid
        << std::dec << " sender " << s.sender_id << " len " << TCPINT_OPT_LEN;
    r.details.emplace_back("option", opt.str());
    // Which syscall-hook form runs: the pins say what was loaded.
    for (const char* prog : {"tcpint_sys_enter", "tcpint_sys_enter_probe"}) {
      struct stat st {};
      if (::stat(ctx.prog_pin_path(prog).c_str(), &st) == 0)
        r.details.emplace_back("syscall hook",
                               std::string(prog) + (std::string(prog) == "tcpint_sys_enter"
                                                        ? " (direct BTF loads)"
                                                        : " (bpf_probe_read_kernel)"));
    }
    return r;
  }

 private:
  static std::string strerrorname(std::uint32_t e) {
    switch (e) {
      case ENOSPC: return "ENOSPC";
      case EEXIST: return "EEXIST";
      case EINVAL: return "EINVAL";
      case ENOENT: return "ENOENT";
      case EFAULT: return "EFAULT";
      case EPERM: return "EPERM";
      case E2BIG: return "E2BIG";
      case ENOMSG: return "ENOMSG";
    }
    return std::to_string(e);
  }
};

}  // namespace

BPFMGR_PLUGIN(TcpintPlugin)
