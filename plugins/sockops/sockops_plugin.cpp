// sockops plugin: a cgroup sock_ops program that records established
// same-host TCP sockets in a sockhash (see docs/sockops.md).
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/stat.h>

#include <bpfmgr/option_checks.hpp>
#include <bpfmgr/plugin.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bypass_common.h"
#include "bypass_kernel.hpp"
#include "sockops.skel.h"

static_assert(sizeof(bypass_key) == 48, "bypass_key layout changed");
static_assert(offsetof(bypass_key, family) == 8);
static_assert(offsetof(bypass_key, local_port) == 12);
static_assert(offsetof(bypass_key, remote_port) == 14);
static_assert(offsetof(bypass_key, local_ip) == 16);
static_assert(offsetof(bypass_key, remote_ip) == 32);
static_assert(sizeof(bypass_cidr) == 24);
static_assert(sizeof(sockops_counters) == 16 * 8);
static_assert(sizeof(sockmsg_counters) == 16 * 8);
static_assert(sizeof(bypass_service_key) == 16);
static_assert(sizeof(bypass_service) == 80);
static_assert(sizeof(bypass_sock_state) == 80);
static_assert(sizeof(bypass_sock_info) == 32);

namespace {

using bpfmgr::Error;

constexpr std::size_t kMaxPorts = 16;
constexpr std::size_t kMaxCidrs = 8;
constexpr std::size_t kMaxHostAddrs = 16;

// "10.0.0.0/8", "::1", "fd00::/64" -> bypass_cidr; nullopt if malformed.
std::optional<bypass_cidr> parse_cidr(const std::string& text) {
  bypass_cidr c{};
  std::string addr = text;
  long prefix = -1;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    prefix = std::stol(p);
  }
  if (inet_pton(AF_INET, addr.c_str(), &c.addr[0]) == 1) {
    c.family = AF_INET;
    if (prefix < 0) prefix = 32;
    if (prefix > 32) return std::nullopt;
  } else if (inet_pton(AF_INET6, addr.c_str(), c.addr) == 1) {
    c.family = AF_INET6;
    if (prefix < 0) prefix = 128;
    if (prefix > 128) return std::nullopt;
  } else {
    return std::nullopt;
  }
  c.prefix_len = static_cast<std::uint32_t>(prefix);
  return c;
}

// This host's interface addresses (loopback is matched by the program).
std::vector<bypass_cidr> host_addresses() {
  std::vector<bypass_cidr> out;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return out;
  for (auto* i = ifa; i && out.size() < kMaxHostAddrs; i = i->ifa_next) {
    if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK)) continue;
    bypass_cidr c{};
    if (i->ifa_addr->sa_family == AF_INET) {
      c.family = AF_INET;
      c.prefix_len = 32;
      std::memcpy(&c.addr[0], &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, 4);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      c.family = AF_INET6;
      c.prefix_len = 128;
      std::memcpy(c.addr, &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, 16);
    } else {
      continue;
    }
    out.push_back(c);
  }
  freeifaddrs(ifa);
  return out;
}

std::size_t count_entries(int map_fd) {
  std::size_t n = 0;
  bypass_key k{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(map_fd, prev, &next) == 0) {
    ++n;
    k = next;
    prev = &k;
  }
  return n;
}

const char* decision_name(std::uint32_t d) {
  switch (d) {
    case BYPASS_DECIDE_LEARNING: return "learning (tcp)";
    case BYPASS_DECIDE_ACCELERATE: return "accelerate";
    case BYPASS_DECIDE_TCP: return "tcp";
  }
  return "?";
}

const char* shape_name(std::uint32_t s) {
  switch (s) {
    case BYPASS_SHAPE_UNKNOWN: return "unknown";
    case BYPASS_SHAPE_REQUEST_RESPONSE: return "request/response";
    case BYPASS_SHAPE_BULK_SMALL: return "bulk, small writes";
    case BYPASS_SHAPE_BULK_LARGE: return "bulk, large writes";
    case BYPASS_SHAPE_QUEUE_GROWS: return "queue grows";
    case BYPASS_SHAPE_HALF_CLOSE: return "half-closes, reads on";
    case BYPASS_SHAPE_UNPROVEN: return "no clean close yet";
  }
  return "?";
}

// One line per learned service: "port 8080 netns 4096: accelerate
// (request/response) samples 4 rr 1024/1024 avg_write 0 accelerated 3 ...".
std::vector<std::string> read_services(int fd) {
  std::vector<std::string> out;
  bypass_service_key k{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    k = next;
    prev = &k;
    bypass_service v{};
    if (bpf_map_lookup_elem(fd, &k, &v) != 0) continue;
    std::ostringstream s;
    s << "port " << k.port << " netns " << k.netns << ": " << decision_name(v.decision)
      << " (" << shape_name(v.shape) << "), samples " << v.samples << ", rr_score "
      << v.rr_score << "/1024, avg_write " << v.avg_write << " B, accelerated "
      << v.accelerated << ", kept_tcp " << v.kept_tcp << ", queue_bound_hits "
      << v.queue_bound_hits << ", half_closes " << v.half_closes << ", clean_closes "
      << v.clean_closes;
    out.push_back(s.str());
  }
  return out;
}

class SockopsPlugin final : public bpfmgr::Plugin {
 public:
  bpfmgr::PluginInfo info() const override {
    return {"sockops", "0.1.0",
            "records established same-host TCP sockets in a sockhash (pair with sockmsg)"};
  }
  std::span<const std::byte> bpf_object() const override {
    std::size_t sz = 0;
    const void* p = sockops_bpf__elf_bytes(&sz);
    return {static_cast<const std::byte*>(p), sz};
  }

  std::vector<bpfmgr::OptionSpec> option_schema() const override {
    using bpfmgr::OptionType;
    return {
        {"cgroup", OptionType::String,
         "cgroup v2 to attach to: \"\" or \"/\" is the root, relative paths are "
         "under the cgroup2 mount, absolute paths must be inside it",
         std::string(""), {}, {}, {}},
        {"ports", OptionType::IntList,
         "accelerate only connections with one of these ports at either end "
         "(empty: every port; at most 16)",
         std::vector<std::int64_t>{}, 1, 65535, {}},
        {"exclude_ports", OptionType::IntList,
         "never accelerate connections with one of these ports at either end (at most 16)",
         std::vector<std::int64_t>{}, 1, 65535, {}},
        {"cidrs", OptionType::StringList,
         "accelerate only when both addresses are inside one of these CIDRs "
         "(empty: any same-host address; at most 8)",
         std::vector<std::string>{}, {}, {}, {}},
        {"host_addresses", OptionType::Bool,
         "treat this host's interface addresses (read at load) as local, besides "
         "loopback and connections to the socket's own address",
         true, {}, {}, {}},
        {"select", OptionType::String,
         "\"all\": accelerate every matching connection of a service (listening "
         "port in a netns) once one of its connections closed cleanly, never one "
         "seen to half-close and read on; \"auto\": besides, accelerate only the "
         "shapes that gain (request/response, large-write bulk), learned from "
         "earlier connections",
         std::string("all"), {}, {}, std::vector<std::string>{"all", "auto"}},
        {"large_write", OptionType::Int,
         "auto: one-way services whose mean write is at least this many bytes "
         "are accelerated",
         std::int64_t{65536}, 1, std::int64_t{1} << 30, {}},
        {"min_samples", OptionType::Int,
         "auto: learning samples (one per connection end that wrote) a service "
         "needs before it may be accelerated",
         std::int64_t{2}, 1, 1000, {}},
        {"rcvbuf", OptionType::Int,
         "SO_RCVBUF (bytes, the kernel doubles it, capped by net.core.rmem_max) "
         "given to accelerated sockets that did not set one; the queue bound "
         "is half the receiver's buffer. 0 leaves it alone",
         std::int64_t{8 << 20}, 0, std::int64_t{1} << 30, {}},
    };
  }

  std::vector<bpfmgr::OptionProblem> validate(const bpfmgr::Options& o) const override {
    std::vector<bpfmgr::OptionProblem> out;
    if (o.get_ints("ports").size() > kMaxPorts)
      out.push_back({"ports", "at most 16 ports", "use a CIDR or a cgroup instead"});
    if (o.get_ints("exclude_ports").size() > kMaxPorts)
      out.push_back({"exclude_ports", "at most 16 ports", ""});
    if (o.get_strings("cidrs").size() > kMaxCidrs)
      out.push_back({"cidrs", "at most 8 CIDRs", ""});
    for (auto& c : o.get_strings("cidrs"))
      if (!parse_cidr(c))
        out.push_back({"cidrs", "'" + c + "' is not an IPv4/IPv6 address or CIDR",
                       "e.g. \"127.0.0.0/8\" or \"::1/128\""});
    if (auto why = bpfmgr::check::cgroup_path_problem(o.get_string("cgroup")); !why.empty())
      out.push_back({"cgroup", why, ""});
    return out;
  }

  // One object for every kernel: what differs between 6.1, 6.12 and 6.18
  // (sk_userlocks a bitfield or a byte) is relocated by CO-RE; what a kernel
  // lacks is an option value that is refused, named here.
  void kernel_requirements(const bpfmgr::Options& o, bpfmgr::KernelNeeds& k) const override {
    using F = bpfmgr::Feature;
    auto needs = bypass::common_needs("sock_ops");
    needs.push_back({F::LinkType, "cgroup", "", "5.7", ""});
    needs.push_back({F::Helper, "sock_ops:bpf_sock_hash_update", "", "", ""});
    needs.push_back({F::Helper, "sock_ops:bpf_get_socket_cookie", "", "", ""});
    // sk_shutdown (a half-close that reads on) and, with rcvbuf, sk_userlocks
    // are bitfields on some kernels: CO-RE bitfield reads (probe_read).
    needs.push_back({F::Helper, "sock_ops:bpf_probe_read_kernel", "", "", ""});
    needs.push_back({F::BtfField, "struct sock.sk_shutdown", "", "", ""});
    if (o.get_int("rcvbuf") != 0)
      needs.push_back({F::BtfField, "struct sock.sk_userlocks", "rcvbuf", "", "rcvbuf = 0"});
    if (o.get_string("select") == "auto") {
      // Learning on the TCP path reads each sendmsg() from the timestamping
      // sock_ops callback, enabled per socket with SK_BPF_CB_FLAGS.
      const std::string hint = "use select = \"all\"";
      needs.push_back({F::BtfEnumValue, "BPF_SOCK_OPS_TSTAMP_SENDMSG_CB", "select", "6.15", hint});
      needs.push_back({F::BtfEnumValue, "SK_BPF_CB_FLAGS", "select", "6.15", hint});
    }
    bypass::declare(k, needs);
  }

  void before_load(bpfmgr::InstanceContext& ctx) override {
    const auto& o = ctx.options();
    auto ports = to_ports(o.get_ints("ports"));
    auto excl = to_ports(o.get_ints("exclude_ports"));
    ctx.set_global("cfg_nr_ports", static_cast<std::uint32_t>(o.get_ints("ports").size()));
    ctx.set_global("cfg_ports", ports);
    ctx.set_global("cfg_nr_exclude_ports",
                   static_cast<std::uint32_t>(o.get_ints("exclude_ports").size()));
    ctx.set_global("cfg_exclude_ports", excl);

    std::array<bypass_cidr, kMaxCidrs> cidrs{};
    std::uint32_t n = 0;
    for (auto& s : o.get_strings("cidrs")) {
      auto c = parse_cidr(s);
      if (!c) throw Error("cidrs: '" + s + "' is not a CIDR");
      cidrs.at(n++) = *c;
    }
    ctx.set_global("cfg_nr_cidrs", n);
    ctx.set_global("cfg_cidrs", cidrs);

    std::array<bypass_cidr, kMaxHostAddrs> hosts{};
    std::uint32_t h = 0;
    if (o.get_bool("host_addresses"))
      for (auto& c : host_addresses()) hosts.at(h++) = c;
    ctx.set_global("cfg_nr_host_addrs", h);
    ctx.set_global("cfg_host_addrs", hosts);

    ctx.set_global("cfg_select", o.get_string("select") == "auto"
                                     ? std::uint32_t{BYPASS_SELECT_AUTO}
                                     : std::uint32_t{BYPASS_SELECT_ALL});
    ctx.set_global("cfg_large_write", static_cast<std::uint64_t>(o.get_int("large_write")));
    ctx.set_global("cfg_min_samples", static_cast<std::uint32_t>(o.get_int("min_samples")));
    ctx.set_global("cfg_rcvbuf", static_cast<std::uint32_t>(o.get_int("rcvbuf")));
  }

  void attach(bpfmgr::InstanceContext& ctx) override {
    // The core resolves the option by the SDK's cgroup rule
    // (<bpfmgr/cgroup.hpp>), the one validate() checked it by.
    ctx.attach_cgroup("bypass_sockops", ctx.options().get_string("cgroup"));
  }

  bpfmgr::StatusReport status(bpfmgr::PinnedContext& ctx) const override {
    bpfmgr::StatusReport r;
    auto v = bpfmgr::read_percpu<sockops_counters>(ctx.map_fd("sockops_counters"));
    for (auto [name, field] : {
             std::pair{"inserted", &sockops_counters::inserted},
             std::pair{"skipped_not_local", &sockops_counters::skipped_not_local},
             std::pair{"skipped_filtered", &sockops_counters::skipped_filtered},
             std::pair{"skipped_no_peer", &sockops_counters::skipped_no_peer},
             std::pair{"insert_failed", &sockops_counters::insert_failed},
             std::pair{"half_closed", &sockops_counters::half_closed},
             std::pair{"auto_accelerated", &sockops_counters::auto_accelerated},
             std::pair{"auto_kept_tcp", &sockops_counters::auto_kept_tcp},
             std::pair{"samples_tcp", &sockops_counters::samples_tcp},
             std::pair{"learn_callbacks", &sockops_counters::learn_callbacks},
             std::pair{"rcvbuf_raised", &sockops_counters::rcvbuf_raised},
             std::pair{"half_close_reads", &sockops_counters::half_close_reads},
             std::pair{"skipped_half_close", &sockops_counters::skipped_half_close},
             std::pair{"skipped_unproven", &sockops_counters::skipped_unproven},
             std::pair{"clean_closes", &sockops_counters::clean_closes}})
      r.counters.push_back(bpfmgr::percpu_counter(name, v, field));
    r.counters.push_back(
        {"sockets_in_map", count_entries(ctx.map_fd("sock_hash")), {}});
    r.details.push_back({"cgroup", ctx.options().get_string("cgroup").empty()
                                       ? "/ (cgroup v2 root)"
                                       : ctx.options().get_string("cgroup")});
    r.details.push_back({"sockhash", ctx.map_pin_path("sock_hash")});
    r.details.push_back({"select", ctx.options().get_string("select")});
    {  // auto: learned services; both modes: services kept on TCP
      auto svcs = read_services(ctx.map_fd("services"));
      r.counters.push_back({"services", svcs.size(), {}});
      for (auto& line : svcs) r.details.push_back({"service", line});
    }
    return r;
  }

 private:
  static std::array<std::uint16_t, kMaxPorts> to_ports(const std::vector<std::int64_t>& v) {
    std::array<std::uint16_t, kMaxPorts> out{};
    if (v.size() > kMaxPorts) throw Error("at most 16 ports");
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<std::uint16_t>(v[i]);
    return out;
  }
};

}  // namespace

BPFMGR_PLUGIN(SockopsPlugin)
