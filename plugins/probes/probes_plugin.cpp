// probes: connection probes, network events and syscall tracers (issue 4).
//
// The BPF side is probes.bpf.c; the contract is probes.h. This file maps
// options to globals/map sizes/programs, attaches (optional hooks may be
// missing), reports counters and live hooks and formats events. Its benchmark is
// bench/probes, outside the shipped plugin.
#include <bpfmgr/option_checks.hpp>
#include <bpfmgr/plugin.hpp>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "probes.skel.h"
#include "probes_format.hpp"

namespace bpfmgr::probes {
namespace {

namespace fs = std::filesystem;

// Every program, its hook, and whether a missing hook may be skipped (pixie
// style: probes as data, attached in one loop). `copy` is the variant that
// reads the fd table and saved registers with bpf_probe_read_kernel, for
// kernels without the kfunc bpf_rdonly_cast (6.1); see compat.bpf.h.
struct ProgSpec {
  const char* prog;
  const char* copy;  // nullptr: one program for every kernel
  const char* hook;
  const char* tracepoint;  // "category/name" the hook needs
  bool optional;
};
constexpr ProgSpec kProgs[] = {
    {"probes_set_state", nullptr, "tracepoint/sock/inet_sock_set_state",
     "sock/inet_sock_set_state", false},
    {"probes_accept4_exit", "probes_accept4_exit_copy", "tracepoint/syscalls/sys_exit_accept4",
     "syscalls/sys_exit_accept4", true},
    {"probes_accept_exit", "probes_accept_exit_copy", "tracepoint/syscalls/sys_exit_accept",
     "syscalls/sys_exit_accept", true},
    {"probes_retransmit", nullptr, "tracepoint/tcp/tcp_retransmit_skb",
     "tcp/tcp_retransmit_skb", true},
    {"probes_send_reset", nullptr, "tracepoint/tcp/tcp_send_reset", "tcp/tcp_send_reset", true},
    {"probes_receive_reset", nullptr, "tracepoint/tcp/tcp_receive_reset",
     "tcp/tcp_receive_reset", true},
    {"probes_kfree_skb", nullptr, "tracepoint/skb/kfree_skb", "skb/kfree_skb", true},
    {"probes_rcvq_full", nullptr, "raw_tp/sock_rcvqueue_full", "sock/sock_rcvqueue_full", true},
    {"probes_sys_enter", "probes_sys_enter_copy", "raw_tp/sys_enter", "raw_syscalls/sys_enter",
     false},
    {"probes_sys_exit", "probes_sys_exit_copy", "raw_tp/sys_exit", "raw_syscalls/sys_exit",
     false},
};

// ---------------------------------------------------------- kernel facts
// What decides a variant, asked the same way by kernel_requirements() and
// before_load() (both see the same KernelView).
constexpr const char* kRdonlyCast = "bpf_rdonly_cast";

bool direct_loads(const KernelView& k) { return k.has(Feature::Kfunc, kRdonlyCast); }

// In a hook: the core's probe (plugin API 2.2). A core older than 2.2 has
// none; then the kernel's BTF is asked for the kfunc directly.
bool direct_loads(const ContextBase& ctx) {
  try {
    return direct_loads(ctx.kernel());
  } catch (const Error&) {
    btf* vmlinux = btf__load_vmlinux_btf();
    bool found = vmlinux && btf__find_by_name_kind(vmlinux, kRdonlyCast, BTF_KIND_FUNC) >= 0;
    btf__free(vmlinux);
    return found;
  }
}

// The program of `p` this kernel runs.
const char* variant(const ProgSpec& p, bool direct) {
  return direct || !p.copy ? p.prog : p.copy;
}

std::vector<std::string> all_kind_names() {
  std::vector<std::string> v;
  for (auto& k : kKindOptions) v.emplace_back(k.option);
  return v;
}
std::vector<std::string> all_op_names() {
  std::vector<std::string> v;
  for (auto& o : kOpNames) v.emplace_back(o);
  return v;
}

std::uint32_t kinds_mask(const Options& o) {
  std::uint32_t m = 0;
  for (auto& name : o.get_strings("kinds"))
    for (auto& k : kKindOptions)
      if (k.option == name) m |= k.bit;
  return m;
}

std::uint32_t ops_mask(const Options& o) {
  std::uint32_t m = 0;
  for (auto& name : o.get_strings("syscalls"))
    for (std::size_t i = 0; i < kOpNames.size(); ++i)
      if (kOpNames[i] == name) m |= 1u << i;
  return m;
}

// Options as restored by the core for status/events may lack a key or carry
// an empty list of another type: read lists defensively there.
std::vector<std::int64_t> ints_or_empty(const Options& o, const char* k) {
  try {
    if (o.has(k)) return o.get_ints(k);
  } catch (const std::exception&) {
  }
  return {};
}
std::vector<std::string> strings_or_empty(const Options& o, const char* k) {
  try {
    if (o.has(k)) return o.get_strings(k);
  } catch (const std::exception&) {
  }
  return {};
}

// The traced syscalls in status, where the core restores the options and
// one may be missing (then the schema's default: every kind, all ten).
std::uint32_t ops_mask_or_all(const Options& o) {
  auto kinds = strings_or_empty(o, "kinds");
  if (!kinds.empty() && std::find(kinds.begin(), kinds.end(), "syscalls") == kinds.end())
    return 0;
  auto names = strings_or_empty(o, "syscalls");
  if (names.empty()) return (1u << PROBES_OP_MAX) - 1;
  std::uint32_t m = 0;
  for (auto& name : names)
    for (std::size_t i = 0; i < kOpNames.size(); ++i)
      if (kOpNames[i] == name) m |= 1u << i;
  return m;
}

bool process_filters(const Options& o) {
  return !o.get_ints("pids").empty() || !o.get_strings("comms").empty() ||
         !o.get_strings("cgroups").empty();
}

// Which programs an instance loads.
std::set<std::string> wanted_programs(const Options& o) {
  std::uint32_t k = kinds_mask(o);
  std::set<std::string> p;
  const std::uint32_t net = PROBES_K_RETRANSMIT | PROBES_K_RESET |
                            PROBES_K_DROP | PROBES_K_RCVQ_FULL;
  // The connection table also tells network events their owner, which the
  // process filters need.
  bool conns = (k & (PROBES_K_CONNECT | PROBES_K_ACCEPT | PROBES_K_CLOSE)) ||
               ((k & net) && process_filters(o));
  if (conns) {
    p.insert("probes_set_state");
    p.insert("probes_accept4_exit");
    p.insert("probes_accept_exit");
  }
  if (k & PROBES_K_RETRANSMIT) p.insert("probes_retransmit");
  if (k & PROBES_K_RESET) {
    p.insert("probes_send_reset");
    p.insert("probes_receive_reset");
  }
  if (k & PROBES_K_DROP) p.insert("probes_kfree_skb");
  if (k & PROBES_K_RCVQ_FULL) p.insert("probes_rcvq_full");
  if ((k & PROBES_K_SYSCALLS) && ops_mask(o)) {
    p.insert("probes_sys_enter");
    p.insert("probes_sys_exit");
  }
  return p;
}

template <class T>
std::string join(const std::vector<T>& v) {
  std::ostringstream s;
  for (std::size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  return s.str();
}

class ProbesPlugin final : public Plugin {
 public:
  PluginInfo info() const override {
    return {"probes", "0.1.0",
            "connection probes (connect/accept/close), network events "
            "(retransmit, reset, drop, rcvqueue full) and read/write syscall "
            "tracers, streamed through a pinned ring buffer"};
  }

  std::span<const std::byte> bpf_object() const override {
    std::size_t sz = 0;
    const void* data = probes_bpf__elf_bytes(&sz);
    return {static_cast<const std::byte*>(data), sz};
  }

  std::vector<OptionSpec> option_schema() const override {
    using V = std::vector<std::string>;
    using I = std::vector<std::int64_t>;
    return {
        {"kinds", OptionType::StringList,
         "event kinds that are on (syscalls = the syscall tracers)",
         all_kind_names(), {}, {}, all_kind_names()},
        {"syscalls", OptionType::StringList,
         "syscalls the tracers cover", all_op_names(), {}, {}, all_op_names()},
        {"sockets_only", OptionType::Bool,
         "syscall tracers count calls on sockets only", true, {}, {}, {}},
        {"latency_sample_every", OptionType::Int,
         "time one traced syscall in N per CPU for the latency histogram "
         "(power of two; 1 = every call). Calls and bytes are always exact",
         std::int64_t{16}, 1, 65536, {}},
        {"syscall_events", OptionType::Bool,
         "also stream one event per traced syscall (costly; off by default)",
         false, {}, {}, {}},
        {"pids", OptionType::IntList, "only these processes (tgid)", I{}, 1,
         4194304, {}},
        {"comms", OptionType::StringList,
         "only processes with these names (at most 8, 15 chars each)", V{},
         {}, {}, {}},
        {"ports", OptionType::IntList, "only these local or remote ports",
         I{}, 1, 65535, {}},
        {"cgroups", OptionType::StringList,
         "only processes in these cgroup v2 paths (or below them), absolute "
         "or relative to the cgroup2 mount",
         V{}, {}, {}, {}},
        {"families", OptionType::StringList,
         "address families (v4-mapped IPv6 counts as ipv4)",
         V{"ipv4", "ipv6"}, {}, {}, V{"ipv4", "ipv6"}},
        {"ring_buffer_kb", OptionType::Int,
         "ring buffer size in KiB (power of two); 1 MiB holds ~6800 events",
         std::int64_t{1024}, 4, 1 << 20, {}},
        {"max_connections", OptionType::Int,
         "connections tracked at once (conns map size)", std::int64_t{65536},
         64, 1 << 22, {}},
        {"max_syscall_stats", OptionType::Int,
         "(process, syscall, socket) aggregate slots per CPU (syscall_stats "
         "size, power of two)",
         std::int64_t{4096}, 16, 1 << 20, {}},
        {"ring_buffer_wakeup_kb", OptionType::Int,
         "wake the events reader once this many KiB wait in the ring, at "
         "most a quarter of the ring (fewer wake-ups; records late by at "
         "most the reader's 100 ms poll); 0: wake it whenever it has caught "
         "up (about once per record)",
         std::int64_t{64}, 0, 1 << 19, {}},
    };
  }

  // Declared per option value; before_load picks the same variants.
  void kernel_requirements(const Options& o, KernelNeeds& k) const override {
    // Every instance: kernel BTF (CO-RE), the program and map types of the
    // object (libbpf creates every map whatever programs load).
    k.require(Feature::BtfType, "struct sock", "", "5.4",
              "a kernel built with CONFIG_DEBUG_INFO_BTF=y");
    k.require(Feature::ProgType, "tracepoint");
    k.require(Feature::ProgType, "raw_tracepoint");
    k.require(Feature::MapType, "ringbuf", "", "5.8");
    k.require(Feature::MapType, "task_storage", "", "5.11");
    k.require(Feature::Helper, "tracepoint:bpf_get_current_task_btf", "", "5.11");
    k.require(Feature::Helper, "raw_tracepoint:bpf_task_storage_get", "", "5.11");
    k.require(Feature::Helper, "tracepoint:bpf_ringbuf_reserve", "", "5.8");
    if (!o.get_strings("cgroups").empty()) {
      k.require(Feature::Helper, "tracepoint:bpf_get_current_ancestor_cgroup_id", "cgroups",
                "5.7", "filter by pids or comms instead");
      k.require(Feature::Helper, "raw_tracepoint:bpf_get_current_ancestor_cgroup_id", "cgroups",
                "5.7", "filter by pids or comms instead");
    }

    auto wanted = wanted_programs(o);
    for (auto& p : kProgs) {
      // Classic tracepoints only: libbpf finds them in tracefs. Raw ones
      // attach by name (no tracefs needed), and a missing optional one is
      // left out at attach and listed by status.
      if (!wanted.count(p.prog) || !std::string_view(p.hook).starts_with("tracepoint/"))
        continue;
      if (!p.optional)
        k.require(Feature::Tracepoint, p.tracepoint, "kinds");
      else if (!k.has(Feature::Tracepoint, p.tracepoint))
        k.degrade(std::string("without ") + p.hook,
                  std::string("this kernel has no tracepoint ") + p.tracepoint);
    }
    bool fd_walk = wanted.count("probes_sys_exit") || wanted.count("probes_accept_exit");
    if (fd_walk && !direct_loads(k))
      k.degrade("variant *_copy of the syscall and accept programs: the fd table and "
                "saved registers read with bpf_probe_read_kernel (slower per call)",
                "no kfunc bpf_rdonly_cast (Linux 6.2+)");
    auto kinds = kinds_mask(o);
    if ((kinds & PROBES_K_RESET) &&
        !k.has(Feature::BtfType, "struct trace_event_raw_tcp_send_reset"))
      k.degrade("reset_sent events without a reason, and none for resets sent without a "
                "socket (a closed port)",
                "tracepoint tcp/tcp_send_reset records them since Linux 6.10");
    if ((kinds & PROBES_K_DROP) &&
        !k.has(Feature::BtfField, "struct trace_event_raw_kfree_skb.rx_sk"))
      k.degrade("drops attributed through skb->sk only",
                "tracepoint skb/kfree_skb records rx_sk since Linux 6.12");
  }

  std::vector<OptionProblem> validate(const Options& o) const override {
    std::vector<OptionProblem> p;
    auto kb = o.get_int("ring_buffer_kb");
    if (kb & (kb - 1))
      p.push_back({"ring_buffer_kb", "must be a power of two",
                   "try " + std::to_string(std::int64_t(1) << (64 - __builtin_clzll(kb)))});
    auto slots = o.get_int("max_syscall_stats");
    if (slots & (slots - 1))
      p.push_back({"max_syscall_stats", "must be a power of two",
                   "try " + std::to_string(std::int64_t(1) << (64 - __builtin_clzll(slots)))});
    auto every = o.get_int("latency_sample_every");
    if (every & (every - 1))
      p.push_back({"latency_sample_every", "must be a power of two", ""});
    auto& comms = o.get_strings("comms");
    if (comms.size() > PROBES_MAX_COMMS)
      p.push_back({"comms", "at most 8 names", ""});
    for (auto& c : comms)
      if (c.empty() || c.size() >= PROBES_COMM_LEN)
        p.push_back({"comms", "'" + c + "': names are 1 to 15 characters",
                     "the kernel truncates comm to 15 characters"});
    if (o.get_strings("cgroups").size() > PROBES_MAX_CGROUPS)
      p.push_back({"cgroups", "at most 8 cgroups", ""});
    for (auto& cg : o.get_strings("cgroups"))
      if (auto why = bpfmgr::check::cgroup_path_problem(cg); !why.empty())
        p.push_back({"cgroups", why, ""});
    if (o.get_strings("kinds").empty())
      p.push_back({"kinds", "no kind listed: the instance would trace nothing", ""});
    if (o.get_strings("families").empty())
      p.push_back({"families", "no family left: nothing would be traced",
                   "list ipv4, ipv6 or both"});
    bool syscalls_on = (kinds_mask(o) & PROBES_K_SYSCALLS) != 0;
    if (syscalls_on && o.get_strings("syscalls").empty())
      p.push_back({"syscalls", "the syscalls kind is on but no syscall is",
                   "drop 'syscalls' from kinds"});
    return p;
  }

  void before_load(InstanceContext& ctx) override {
    const Options& o = ctx.options();
    auto set8 = [&](const char* n, std::uint8_t v) { ctx.set_global(n, v); };

    ctx.set_global("kinds", kinds_mask(o));
    ctx.set_global("traced_ops", ops_mask(o));
    set8("sockets_only", o.get_bool("sockets_only"));
    set8("syscall_events", o.get_bool("syscall_events"));
    ctx.set_global("latency_sample_mask",
                   std::uint32_t(o.get_int("latency_sample_every") - 1));
    std::uint8_t fam = 0;
    for (auto& f : o.get_strings("families")) fam |= f == "ipv4" ? 1 : 2;
    set8("family_mask", fam);
    set8("filter_pids", !o.get_ints("pids").empty());

    std::uint8_t bitmap[8192] = {};
    for (auto port : o.get_ints("ports")) bitmap[port >> 3] |= 1u << (port & 7);
    set8("filter_ports", !o.get_ints("ports").empty());
    ctx.set_global("port_bitmap", bitmap, sizeof bitmap);

    std::uint64_t comms[PROBES_MAX_COMMS][2] = {};
    auto& cn = o.get_strings("comms");
    for (std::size_t i = 0; i < cn.size() && i < PROBES_MAX_COMMS; ++i)
      std::memcpy(comms[i], cn[i].data(),
                  std::min<std::size_t>(cn[i].size(), PROBES_COMM_LEN - 1));
    ctx.set_global("n_comms", std::uint32_t(cn.size()));
    ctx.set_global("comms", comms, sizeof comms);

    std::uint64_t ids[PROBES_MAX_CGROUPS] = {};
    std::uint32_t levels[PROBES_MAX_CGROUPS] = {};
    auto& cgs = o.get_strings("cgroups");
    for (std::size_t i = 0; i < cgs.size() && i < PROBES_MAX_CGROUPS; ++i) {
      bpfmgr::Cgroup cg;  // the SDK's rule (<bpfmgr/cgroup.hpp>), as validate()
      if (auto why = bpfmgr::resolve_cgroup(cgs[i], cg, nullptr, ctx.cgroup2_root());
          !why.empty())
        throw Error("cgroups: '" + cgs[i] + "': " + why);
      ids[i] = cg.id;
      levels[i] = cg.level;
    }
    ctx.set_global("n_cgroups", std::uint32_t(cgs.size()));
    ctx.set_global("cgroup_ids", ids, sizeof ids);
    ctx.set_global("cgroup_levels", levels, sizeof levels);

    ctx.set_max_entries("events",
                        std::uint32_t(o.get_int("ring_buffer_kb")) * 1024);
    ctx.set_global("wakeup_bytes",
                   std::uint64_t(std::min(o.get_int("ring_buffer_wakeup_kb"),
                                          o.get_int("ring_buffer_kb") / 4)) *
                       1024);
    ctx.set_max_entries("conns", std::uint32_t(o.get_int("max_connections")));
    ctx.set_max_entries("syscall_stats",
                        std::uint32_t(o.get_int("max_syscall_stats")));
    ctx.set_global("sys_slots_mask",
                   std::uint32_t(o.get_int("max_syscall_stats") - 1));
    ctx.set_max_entries("filter_pid",
                        std::max<std::uint32_t>(1, o.get_ints("pids").size()));

    auto wanted = wanted_programs(o);
    bool direct = direct_loads(ctx);
    for (auto& p : kProgs) {
      bool on = wanted.count(p.prog) != 0;
      ctx.set_autoload(p.prog, on && variant(p, direct) == p.prog);
      if (p.copy) ctx.set_autoload(p.copy, on && variant(p, direct) == p.copy);
    }
  }

  void after_load(InstanceContext& ctx) override {
    int fd = ctx.map_fd("filter_pid");
    for (auto pid : ctx.options().get_ints("pids")) {
      std::uint32_t k = std::uint32_t(pid);
      std::uint8_t v = 1;
      if (bpf_map_update_elem(fd, &k, &v, BPF_ANY))
        throw Error("filter_pid: update failed: " + std::string(strerror(errno)));
    }
  }

  void attach(InstanceContext& ctx) override {
    auto wanted = wanted_programs(ctx.options());
    bool direct = direct_loads(ctx);
    for (auto& p : kProgs) {
      if (!wanted.count(p.prog)) continue;
      bool ok = ctx.attach_auto(variant(p, direct), p.optional);
      if (!ok)
        bpfmgr::log_warn("probes: " + ctx.instance_name() + ": hook " + p.hook +
                         " is missing on this kernel; carrying on without it");
    }
  }

  StatusReport status(PinnedContext& ctx) const override {
    StatusReport r;
    // Per-CPU counters, one struct per CPU.
    auto pc = bpfmgr::read_percpu<probes_counters>(ctx.map_fd("counters"));
    for (auto [name, field] : {
             std::pair{"events_emitted", &probes_counters::events_emitted},
             std::pair{"events_dropped", &probes_counters::events_dropped},
             std::pair{"syscall_stats_full", &probes_counters::sys_stats_full},
             std::pair{"conns_full", &probes_counters::conns_full},
             std::pair{"inflight_nomem", &probes_counters::inflight_nomem},
             std::pair{"mmsg_truncated", &probes_counters::mmsg_truncated}})
      r.counters.push_back(bpfmgr::percpu_counter(name, pc, field));

    // Connections tracked now.
    {
      int fd = ctx.map_fd("conns");
      probes_conn_key k{}, next{};
      std::uint64_t n = 0;
      void* prev = nullptr;
      while (bpf_map_get_next_key(fd, prev, &next) == 0 && n < (1u << 24)) {
        k = next;
        prev = &k;
        ++n;
      }
      r.counters.push_back({"conns_tracked", n, {}});
    }

    // Syscall aggregates summed per syscall.
    {
      auto stats = read_sys_stats(ctx.map_fd("syscall_stats"));
      std::uint64_t calls[PROBES_OP_MAX] = {}, bytes[PROBES_OP_MAX] = {},
                    errors[PROBES_OP_MAX] = {};
      for (auto& [k, v] : stats) {
        if (k.op >= PROBES_OP_MAX) continue;
        calls[k.op] += v.calls;
        bytes[k.op] += v.bytes;
        errors[k.op] += v.errors;
      }
      std::uint64_t total = 0;
      for (auto c : calls) total += c;
      r.counters.push_back({"syscalls_traced", total, {}});
      r.counters.push_back({"syscall_stats_entries", stats.size(), {}});
      // Per syscall: Prometheus counters with a `syscall` label, one sample
      // per traced syscall from the start (0 until it is seen), so series
      // neither appear late nor vanish; status shows the seen ones.
      std::string seen;
      const std::uint32_t traced = ops_mask_or_all(ctx.options());
      for (int i = 0; i < PROBES_OP_MAX; ++i) {
        if (!(traced >> i & 1)) continue;
        std::string op(kOpNames[i]);
        std::vector<std::pair<std::string, std::string>> label{{"syscall", op}};
        r.metrics.push_back({"syscall_calls", MetricKind::Counter, double(calls[i]), label,
                             "traced calls (errors included), summed over processes and "
                             "sockets"});
        r.metrics.push_back({"syscall_bytes", MetricKind::Counter, double(bytes[i]), label,
                             "bytes moved by traced calls (sum of positive returns)"});
        r.metrics.push_back({"syscall_errors", MetricKind::Counter, double(errors[i]), label,
                             "traced calls that returned an error"});
        if (calls[i])
          seen += (seen.empty() ? "" : ", ") + op + " " + std::to_string(calls[i]) +
                  " calls " + std::to_string(bytes[i]) + " B";
      }
      if (!seen.empty()) r.details.push_back({"syscalls seen", seen});
    }

    // Which hooks are live: a pinned link means attached.
    std::vector<std::string> live, dead;
    std::string variants;
    for (auto& p : kProgs) {
      for (const char* name : {p.prog, p.copy}) {
        if (!name) continue;
        std::error_code ec;
        bool linked = fs::exists(ctx.link_pin_path(name), ec);
        bool loaded = linked || fs::exists(ctx.prog_pin_path(name), ec);
        if (linked)
          live.push_back(p.hook);
        else if (loaded)
          dead.push_back(p.hook);
        if (loaded && name == p.copy) variants += (variants.empty() ? "" : ",") + std::string(name);
      }
    }
    r.details.push_back({"hooks live", live.empty() ? "none" : join(live)});
    if (!dead.empty()) r.details.push_back({"hooks missing", join(dead)});
    if (!variants.empty())
      r.details.push_back({"variants", variants + " (no bpf_rdonly_cast: fd table read by copy)"});
    const Options& o = ctx.options();
    auto detail = [&](const char* key, const std::string& v) {
      if (!v.empty()) r.details.push_back({key, v});
    };
    detail("kinds", join(strings_or_empty(o, "kinds")));
    detail("pids", join(ints_or_empty(o, "pids")));
    detail("comms", join(strings_or_empty(o, "comms")));
    detail("ports", join(ints_or_empty(o, "ports")));
    detail("cgroups", join(strings_or_empty(o, "cgroups")));
    detail("families", join(strings_or_empty(o, "families")));
    return r;
  }

  std::optional<std::string> events_map() const override { return "events"; }

  std::unique_ptr<EventFormatter> event_formatter(const Options&) const override {
    return std::make_unique<ProbesFormatter>();
  }

};

}  // namespace
}  // namespace bpfmgr::probes

BPFMGR_PLUGIN(bpfmgr::probes::ProbesPlugin)
