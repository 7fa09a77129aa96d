#include "tcpint_options.hpp"

#include <bpfmgr/cgroup.hpp>
#include <bpfmgr/option_checks.hpp>

#include <arpa/inet.h>
#include <unistd.h>

#include <cstring>

namespace tcpint {

namespace {
// Lists read tolerantly: options restored from a loaded instance's state
// may carry an empty list typed as the other kind of list.
std::vector<std::int64_t> int_list(const bpfmgr::Options& o,
                                   const std::string& key) {
  auto it = o.all().find(key);
  if (it == o.all().end()) return {};
  if (auto* v = std::get_if<std::vector<std::int64_t>>(&it->second)) return *v;
  return {};
}
std::vector<std::string> string_list(const bpfmgr::Options& o,
                                     const std::string& key) {
  auto it = o.all().find(key);
  if (it == o.all().end()) return {};
  if (auto* v = std::get_if<std::vector<std::string>>(&it->second)) return *v;
  return {};
}
}  // namespace

using bpfmgr::OptionSpec;
using bpfmgr::OptionType;

std::vector<OptionSpec> option_schema() {
  return {
      {"cgroup", OptionType::String,
       "cgroup v2 whose sockets (and processes) are traced: \"\" or \"/\" is "
       "the root, a path starting with the cgroup2 mount is taken as it is, "
       "any other (\"/foo\" too) is under the mount",
       std::string(""), {}, {}, {}},
      {"ports", OptionType::IntList,
       "trace only flows whose local or remote port is listed (empty: all)",
       std::vector<std::int64_t>{}, 1, 65535, {}},
      {"cidrs", OptionType::StringList,
       "trace only flows whose remote address is in one of these CIDRs "
       "(IPv4 CIDRs also match v4-mapped IPv6; empty: all)",
       std::vector<std::string>{}, {}, {}, {}},
      {"option_kind", OptionType::Int,
       "TCP option kind: 253 or 254 (RFC 6994 experimental)",
       std::int64_t{TCPINT_DEFAULT_KIND}, 253, 254, {}},
      {"exid", OptionType::Int,
       "16-bit experiment id (magic) after kind and length (RFC 6994)",
       std::int64_t{TCPINT_DEFAULT_EXID}, 1, 65535, {}},
      {"sender_id", OptionType::Int,
       "this host's id in the option; 0 = derived from hostname + instance",
       std::int64_t{0}, 0, 65535, {}},
      {"segments", OptionType::StringList,
       "segments that carry the option: syn, ack (the one completing the "
       "handshake), data (every data segment, retransmits included), "
       "data_changed (data segments only when trace id/flags differ from "
       "the last option the socket wrote; ignored with data), fin",
       std::vector<std::string>{"syn", "ack", "data", "fin"}, {}, {},
       {"syn", "ack", "data", "data_changed", "fin"}},
      {"syscall_hooks", OptionType::Bool,
       "keep the context current from send/recv syscalls (raw tracepoint "
       "sys_enter); off: context is what connect/accept saw",
       true, {}, {}, {}},
      {"propagate", OptionType::Bool,
       "a thread's new sends carry the trace id of the flow it last "
       "received on (needs syscall_hooks for recv tracking)",
       true, {}, {}, {}},
      {"fallbacks", OptionType::String,
       "auto: each program in the fastest form this kernel allows; always: "
       "the forms Linux 6.1 runs (bpf_probe_read_kernel reads in the "
       "syscall hook and for the connecting task), on any kernel",
       std::string("auto"), {}, {}, {"auto", "always"}},
      {"max_flows", OptionType::Int,
       "entries of flow_context_map and rx_context_map (LRU)",
       std::int64_t{16384}, 64, 1 << 20, {}},
  };
}

bool parse_cidr(const std::string& text, tcpint_cidr_key& key,
                std::string& why) {
  std::memset(&key, 0, sizeof(key));
  std::string addr = text;
  int prefix = -1;
  auto slash = text.find('/');
  if (slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos) {
      why = "prefix length '" + p + "' is not a number";
      return false;
    }
    prefix = std::stoi(p);
  }
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, addr.c_str(), &v4) == 1) {
    if (prefix < 0) prefix = 32;
    if (prefix > 32) {
      why = "IPv4 prefix longer than 32";
      return false;
    }
    key.addr[10] = 0xff;
    key.addr[11] = 0xff;
    std::memcpy(&key.addr[12], &v4, 4);
    key.prefixlen = 96 + static_cast<std::uint32_t>(prefix);
  } else if (inet_pton(AF_INET6, addr.c_str(), &v6) == 1) {
    if (prefix < 0) prefix = 128;
    if (prefix > 128) {
      why = "IPv6 prefix longer than 128";
      return false;
    }
    std::memcpy(key.addr, &v6, 16);
    key.prefixlen = static_cast<std::uint32_t>(prefix);
  } else {
    why = "'" + addr + "' is neither an IPv4 nor an IPv6 address";
    return false;
  }
  return true;
}

std::vector<bpfmgr::OptionProblem> validate(const bpfmgr::Options& o) {
  std::vector<bpfmgr::OptionProblem> out;
  if (o.has("exid") && o.get_int("exid") == TCPINT_TFO_EXID)
    out.push_back({"exid", "0xF989 is TCP Fast Open's ExID",
                   "pick another 16-bit value, e.g. 0x5449"});
  if (o.has("cidrs")) {
    for (const auto& c : string_list(o, "cidrs")) {
      tcpint_cidr_key k;
      std::string why;
      if (!parse_cidr(c, k, why))
        out.push_back({"cidrs", "'" + c + "': " + why,
                       "write e.g. \"10.0.0.0/8\" or \"fd00::/8\""});
    }
    if (string_list(o, "cidrs").size() > 64)
      out.push_back({"cidrs", "at most 64 CIDRs", ""});
  }
  if (int_list(o, "ports").size() > 64)
    out.push_back({"ports", "at most 64 ports", ""});
  if (o.has("segments") && string_list(o, "segments").empty())
    out.push_back({"segments", "no segment listed: the option would never be sent",
                   "list at least one of syn, ack, data, fin, data_changed"});
  if (o.has("cgroup"))
    if (auto why = bpfmgr::check::cgroup_path_problem(o.get_string("cgroup")); !why.empty())
      out.push_back({"cgroup", why, ""});
  return out;
}

std::uint16_t auto_sender_id(const std::string& instance_name) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::uint32_t h = 2166136261u;
  for (const char* s : {static_cast<const char*>(host), "/",
                        instance_name.c_str()})
    for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 16777619u;
  std::uint16_t id = static_cast<std::uint16_t>(h ^ (h >> 16));
  return id ? id : 1;
}

Settings settings_from(const bpfmgr::Options& o, const std::string& cgroup2_root,
                       const std::string& instance_name, bool resolve_cgroup) {
  Settings s;
  auto problems = validate(o);
  // Without resolving, the cgroup's existence (a fact of the host, which
  // validate reports itself) is not this parse's concern.
  if (!resolve_cgroup)
    std::erase_if(problems, [](const bpfmgr::OptionProblem& p) { return p.key == "cgroup"; });
  if (!problems.empty())
    throw bpfmgr::Error("tcpint: option '" + problems.front().key +
                        "': " + problems.front().message);
  s.kind = static_cast<std::uint8_t>(o.get_int("option_kind"));
  s.exid = static_cast<std::uint16_t>(o.get_int("exid"));
  auto sid = o.get_int("sender_id");
  s.sender_id = sid ? static_cast<std::uint16_t>(sid)
                    : auto_sender_id(instance_name);
  for (const auto& seg : string_list(o, "segments")) {
    if (seg == "syn") s.segments |= TCPINT_SEG_SYN;
    if (seg == "ack") s.segments |= TCPINT_SEG_ACK;
    if (seg == "data") s.segments |= TCPINT_SEG_DATA;
    if (seg == "fin") s.segments |= TCPINT_SEG_FIN;
    if (seg == "data_changed") s.segments |= TCPINT_SEG_DATA_CHANGED;
  }
  for (auto p : int_list(o, "ports"))
    s.ports.push_back(static_cast<std::uint16_t>(p));
  for (const auto& c : string_list(o, "cidrs")) {
    tcpint_cidr_key k;
    std::string why;
    parse_cidr(c, k, why);
    s.cidrs.push_back(k);
  }
  s.syscall_hooks = o.get_bool("syscall_hooks");
  s.propagate = o.get_bool("propagate");
  s.max_flows = static_cast<std::uint32_t>(o.get_int("max_flows"));
  s.force_fallbacks = o.has("fallbacks") && o.get_string("fallbacks") == "always";
  if (!resolve_cgroup) return s;

  // The SDK's one rule (<bpfmgr/cgroup.hpp>), the one validate checked:
  // "/foo" is foo under the cgroup2 mount, not the host path /foo.
  bpfmgr::Cgroup cg;
  if (auto why = bpfmgr::resolve_cgroup(o.get_string("cgroup"), cg, nullptr, cgroup2_root);
      !why.empty())
    throw bpfmgr::Error("tcpint: option 'cgroup': " + why);
  s.cgroup_path = cg.path;
  s.cgroup_id = cg.id;
  s.cgroup_level = cg.level;
  return s;
}

}  // namespace tcpint
