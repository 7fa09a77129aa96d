// probes: ring-buffer records to a tcplife-like table and JSON lines.
#include "probes_format.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <vector>

namespace bpfmgr::probes {

std::string_view event_kind_name(std::uint32_t kind) {
  switch (kind) {
    case PROBES_EV_CONNECT: return "connect";
    case PROBES_EV_ACCEPT: return "accept";
    case PROBES_EV_CLOSE: return "close";
    case PROBES_EV_CONNECT_FAILED: return "connect_failed";
    case PROBES_EV_RETRANSMIT: return "retransmit";
    case PROBES_EV_RESET_SENT: return "reset_sent";
    case PROBES_EV_RESET_RECV: return "reset_recv";
    case PROBES_EV_DROP: return "drop";
    case PROBES_EV_RCVQ_FULL: return "rcvqueue_full";
    case PROBES_EV_SYSCALL: return "syscall";
    default: return "unknown";
  }
}

std::string_view tcp_state_name(std::uint32_t state) {
  static constexpr std::string_view names[] = {
      "",          "ESTABLISHED", "SYN_SENT",   "SYN_RECV", "FIN_WAIT1",
      "FIN_WAIT2", "TIME_WAIT",   "CLOSE",      "CLOSE_WAIT", "LAST_ACK",
      "LISTEN",    "CLOSING",     "NEW_SYN_RECV"};
  return state < std::size(names) ? names[state] : "?";
}

std::string_view closer_name(std::uint32_t closer) {
  switch (closer) {
    case PROBES_CLOSER_LOCAL: return "local";
    case PROBES_CLOSER_REMOTE: return "remote";
    case PROBES_CLOSER_BOTH: return "both";
    case PROBES_CLOSER_RESET: return "reset";
    default: return "unknown";
  }
}

std::string_view role_name(std::uint32_t role) {
  switch (role) {
    case PROBES_ROLE_CLIENT: return "client";
    case PROBES_ROLE_SERVER: return "server";
    default: return "";
  }
}

std::string format_addr(std::uint16_t family, const std::uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) {
    if (!inet_ntop(AF_INET, addr, buf, sizeof buf)) return "?";
  } else if (family == AF_INET6) {
    if (!inet_ntop(AF_INET6, addr, buf, sizeof buf)) return "?";
  } else {
    return "";
  }
  return buf;
}

namespace {

void load_enum(const btf* b, const char* name, const char* prefix,
               std::map<std::uint32_t, std::string>& out) {
  int id = btf__find_by_name_kind(b, name, BTF_KIND_ENUM);
  if (id < 0) return;
  const btf_type* t = btf__type_by_id(b, id);
  const struct btf_enum* e = btf_enum(t);
  std::size_t plen = std::strlen(prefix);
  for (int i = 0; i < btf_vlen(t); ++i) {
    std::string n = btf__name_by_offset(b, e[i].name_off);
    if (n.compare(0, plen, prefix) == 0) n = n.substr(plen);
    out.emplace(static_cast<std::uint32_t>(e[i].val), std::move(n));
  }
}

std::shared_ptr<KernelEnums> shared_enums() {
  static std::mutex mu;
  static std::weak_ptr<KernelEnums> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto p = cache.lock();
  if (!p) {
    p = std::make_shared<KernelEnums>();
    cache = p;
  }
  return p;
}

std::int64_t clock_ns(clockid_t c) {
  timespec ts{};
  clock_gettime(c, &ts);
  return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string comm_of(const probes_event& e) {
  return std::string(e.comm, strnlen(e.comm, sizeof e.comm));
}

std::string endpoint(std::uint16_t family, const std::uint8_t* addr,
                     std::uint16_t port) {
  std::string a = format_addr(family, addr);
  if (a.empty()) return "-";
  if (family == AF_INET6) return "[" + a + "]:" + std::to_string(port);
  return a + ":" + std::to_string(port);
}

std::string human_ns(std::uint64_t ns) {
  char buf[32];
  if (ns < 10000)
    std::snprintf(buf, sizeof buf, "%lluns", (unsigned long long)ns);
  else if (ns < 10000000)
    std::snprintf(buf, sizeof buf, "%.1fus", ns / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2fms", ns / 1e6);
  return buf;
}

}  // namespace

KernelEnums::KernelEnums() {
  btf* b = btf__load_vmlinux_btf();
  if (!b || libbpf_get_error(b)) return;
  load_enum(b, "skb_drop_reason", "SKB_DROP_REASON_", drop_);
  load_enum(b, "sk_rst_reason", "SK_RST_REASON_", reset_);
  btf__free(b);
}

std::string KernelEnums::drop_reason(std::uint32_t v) const {
  auto it = drop_.find(v);
  return it != drop_.end() ? it->second : std::to_string(v);
}

std::string KernelEnums::reset_reason(std::uint32_t v) const {
  auto it = reset_.find(v);
  return it != reset_.end() ? it->second : std::to_string(v);
}

SysStatsMap read_sys_stats(int fd) {
  SysStatsMap out;
  bpf_map_info info{};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len)) return out;
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return out;
  std::vector<probes_sys_slot> v(ncpu);
  for (std::uint32_t i = 0; i < info.max_entries; ++i) {
    if (bpf_map_lookup_elem(fd, &i, v.data())) continue;
    for (auto& sl : v) {
      if (sl.key.tgid == 0) continue;
      auto [it, fresh] = out.try_emplace(sl.key, probes_sys_stats{});
      auto& s = it->second;
      if (!s.comm[0]) std::memcpy(s.comm, sl.s.comm, sizeof s.comm);
      s.calls += sl.s.calls;
      s.bytes += sl.s.bytes;
      s.errors += sl.s.errors;
      s.timed_calls += sl.s.timed_calls;
      s.total_ns += sl.s.total_ns;
      for (int h = 0; h < PROBES_HIST_SLOTS; ++h) s.hist[h] += sl.s.hist[h];
    }
  }
  return out;
}

ProbesFormatter::ProbesFormatter()
    : realtime_offset_ns_(clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC)),
      enums_(shared_enums()) {}

std::string ProbesFormatter::table_header() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-12s %-14s %-7s %-15s %-28s %-28s %s",
                "TIME", "EVENT", "PID", "COMM", "SADDR:SPORT", "DADDR:DPORT",
                "DETAILS");
  return buf;
}

std::string ProbesFormatter::table_row(const probes_event& e) const {
  std::int64_t wall = std::int64_t(e.ts_ns) + realtime_offset_ns_;
  time_t secs = wall / 1000000000;
  tm tmv{};
  localtime_r(&secs, &tmv);
  char tbuf[32];
  std::snprintf(tbuf, sizeof tbuf, "%02d:%02d:%02d.%03d", tmv.tm_hour,
                tmv.tm_min, tmv.tm_sec, int((wall / 1000000) % 1000));

  std::string details;
  auto add = [&](const std::string& s) {
    if (!details.empty()) details += ' ';
    details += s;
  };
  switch (e.kind) {
    case PROBES_EV_CONNECT:
      add("handshake=" + human_ns(e.duration_ns));
      break;
    case PROBES_EV_ACCEPT:
      add("fd=" + std::to_string(e.fd));
      add("queued=" + human_ns(e.duration_ns));
      break;
    case PROBES_EV_CLOSE:
      add("tx=" + std::to_string(e.bytes_sent));
      add("rx=" + std::to_string(e.bytes_received));
      add("dur=" + human_ns(e.duration_ns));
      add("closer=" + std::string(closer_name(e.closer)));
      add("from=" + std::string(tcp_state_name(e.state)));
      break;
    case PROBES_EV_CONNECT_FAILED:
      add("after=" + human_ns(e.duration_ns));
      break;
    case PROBES_EV_RETRANSMIT:
      add("state=" + std::string(tcp_state_name(e.state)));
      if (e.ret) add("err=" + std::to_string(e.ret));
      break;
    case PROBES_EV_RESET_SENT:
      add("reason=" + enums_->reset_reason(e.reason));
      if (e.state) add("state=" + std::string(tcp_state_name(e.state)));
      break;
    case PROBES_EV_RESET_RECV:
      add("state=" + std::string(tcp_state_name(e.state)));
      break;
    case PROBES_EV_DROP:
      add("reason=" + enums_->drop_reason(e.reason));
      add("proto=" + std::to_string(e.t.proto));
      break;
    case PROBES_EV_RCVQ_FULL:
      add("rmem=" + std::to_string(e.rmem_alloc));
      add("rcvbuf=" + std::to_string(e.rcvbuf));
      break;
    case PROBES_EV_SYSCALL:
      add(std::string(e.op < PROBES_OP_MAX ? kOpNames[e.op] : "?"));
      add("fd=" + std::to_string(e.fd));
      add("ret=" + std::to_string(e.ret));
      add("lat=" + human_ns(e.duration_ns));
      break;
  }
  if (e.sock_ino) add("ino=" + std::to_string(e.sock_ino));

  char buf[512];
  std::snprintf(buf, sizeof buf, "%-12s %-14s %-7u %-15s %-28s %-28s %s", tbuf,
                std::string(event_kind_name(e.kind)).c_str(), e.pid,
                comm_of(e).c_str(),
                endpoint(e.t.family, e.t.saddr, e.t.sport).c_str(),
                endpoint(e.t.family, e.t.daddr, e.t.dport).c_str(),
                details.c_str());
  return buf;
}

namespace {

// A small JSON line writer: `bpfmgr events --json` formats every record, so
// this stays allocation-light (one string, no DOM).
class JsonLine {
 public:
  JsonLine() { s_.reserve(512); s_ += '{'; }
  JsonLine& u(const char* k, std::uint64_t v) {
    key(k);
    char b[24];
    s_.append(b, std::snprintf(b, sizeof b, "%llu", (unsigned long long)v));
    return *this;
  }
  JsonLine& i(const char* k, std::int64_t v) {
    key(k);
    char b[24];
    s_.append(b, std::snprintf(b, sizeof b, "%lld", (long long)v));
    return *this;
  }
  JsonLine& str(const char* k, std::string_view v) {
    key(k);
    s_ += '"';
    for (unsigned char c : v) {
      switch (c) {
        case '"': s_ += "\\\""; break;
        case '\\': s_ += "\\\\"; break;
        case '\n': s_ += "\\n"; break;
        case '\t': s_ += "\\t"; break;
        default:
          if (c < 0x20 || c >= 0x7f) {  // comm is bytes, not UTF-8: escape
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            s_ += b;
          } else {
            s_ += char(c);
          }
      }
    }
    s_ += '"';
    return *this;
  }
  std::string done() {
    s_ += '}';
    return std::move(s_);
  }

 private:
  void key(const char* k) {
    if (s_.size() > 1) s_ += ',';
    s_ += '"';
    s_ += k;
    s_ += "\":";
  }
  std::string s_;
};

}  // namespace

std::string ProbesFormatter::json_line(const probes_event& e) const {
  JsonLine j;
  j.u("ts_ns", e.ts_ns)
      .i("time_unix_ns", std::int64_t(e.ts_ns) + realtime_offset_ns_)
      .str("kind", event_kind_name(e.kind))
      .u("cpu", e.cpu)
      .u("pid", e.pid)
      .u("tid", e.tid)
      .str("comm", comm_of(e))
      .u("cgroup_id", e.cgroup_id);
  if (e.t.family) {
    j.str("family", e.t.family == AF_INET ? "ipv4" : "ipv6")
        .u("proto", e.t.proto)
        .str("saddr", format_addr(e.t.family, e.t.saddr))
        .u("sport", e.t.sport)
        .str("daddr", format_addr(e.t.family, e.t.daddr))
        .u("dport", e.t.dport);
  }
  if (e.sock_ino) j.u("sock_ino", e.sock_ino);
  if (e.role) j.str("role", role_name(e.role));
  switch (e.kind) {
    case PROBES_EV_CONNECT:
    case PROBES_EV_CONNECT_FAILED:
      j.u("duration_ns", e.duration_ns);
      break;
    case PROBES_EV_ACCEPT:
      j.u("fd", e.fd).u("duration_ns", e.duration_ns);
      break;
    case PROBES_EV_CLOSE:
      j.u("bytes_sent", e.bytes_sent)
          .u("bytes_received", e.bytes_received)
          .u("duration_ns", e.duration_ns)
          .str("closer", closer_name(e.closer))
          .str("state", tcp_state_name(e.state));
      break;
    case PROBES_EV_RETRANSMIT:
      j.str("state", tcp_state_name(e.state)).i("err", e.ret);
      break;
    case PROBES_EV_RESET_SENT:
      j.str("reason", enums_->reset_reason(e.reason)).str("state", tcp_state_name(e.state));
      break;
    case PROBES_EV_RESET_RECV:
      j.str("state", tcp_state_name(e.state));
      break;
    case PROBES_EV_DROP:
      j.str("reason", enums_->drop_reason(e.reason)).u("reason_code", e.reason);
      break;
    case PROBES_EV_RCVQ_FULL:
      j.u("rmem_alloc", e.rmem_alloc).u("rcvbuf", e.rcvbuf).u("truesize", e.bytes_received);
      break;
    case PROBES_EV_SYSCALL:
      j.str("syscall", e.op < PROBES_OP_MAX ? kOpNames[e.op] : "?")
          .u("fd", e.fd)
          .i("ret", e.ret)
          .u("bytes", e.op >= PROBES_OP_WRITE ? e.bytes_sent : e.bytes_received)
          .u("duration_ns", e.duration_ns);
      break;
  }
  return j.done();
}

std::string ProbesFormatter::format(std::span<const std::byte> record,
                                    EventFormat format) noexcept {
  try {
    if (record.size() < sizeof(probes_event)) return {};
    probes_event e;
    std::memcpy(&e, record.data(), sizeof e);
    return format == EventFormat::Json ? json_line(e) : table_row(e);
  } catch (...) {
    return {};
  }
}

}  // namespace bpfmgr::probes
