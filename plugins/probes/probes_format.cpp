// probes: ring-buffer records to a tcplife-like table and JSON lines.
#include "probes_format.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <charconv>
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

namespace {

// One table row in a fixed buffer: padded columns and "key=value" details
// without a temporary string per field (the reader formats every record).
class RowBuf {
 public:
  void raw(std::string_view v) {
    std::size_t n = std::min(v.size(), sizeof buf_ - 1 - len_);
    std::memcpy(buf_ + len_, v.data(), n);
    len_ += n;
  }
  void ch(char c) {
    if (len_ < sizeof buf_ - 1) buf_[len_++] = c;
  }
  template <class T>
  void num(T v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    raw(std::string_view(b, std::size_t(r.ptr - b)));
  }
  // Ends a column that started at `start`: pads to `width`, then a space
  // (printf's "%-Ns ").
  void end_col(std::size_t start, std::size_t width) {
    while (len_ - start < width) ch(' ');
    ch(' ');
  }
  std::size_t size() const { return len_; }
  void endpoint(std::uint16_t family, const std::uint8_t* addr, std::uint16_t port) {
    char a[INET6_ADDRSTRLEN] = {};
    if (family != AF_INET && family != AF_INET6) {
      ch('-');
      return;
    }
    if (!inet_ntop(family, addr, a, sizeof a)) std::strcpy(a, "?");
    if (family == AF_INET6) ch('[');
    raw(a);
    if (family == AF_INET6) ch(']');
    ch(':');
    num(port);
  }
  void human_ns(std::uint64_t ns) {
    if (ns < 10000) {
      num(ns);
      raw("ns");
      return;
    }
    char b[32];
    int n = ns < 10000000 ? std::snprintf(b, sizeof b, "%.1fus", ns / 1e3)
                          : std::snprintf(b, sizeof b, "%.2fms", ns / 1e6);
    raw(std::string_view(b, std::size_t(std::max(0, n))));
  }
  // Starts one "key=" of the details column.
  void key(std::string_view k) {
    if (details_) ch(' ');
    details_ = true;
    raw(k);
  }
  std::string str() const { return std::string(buf_, len_); }

 private:
  char buf_[1024];
  std::size_t len_ = 0;
  bool details_ = false;
};

}  // namespace

std::string ProbesFormatter::table_row(const probes_event& e) const {
  std::int64_t wall = std::int64_t(e.ts_ns) + realtime_offset_ns_;
  time_t secs = wall / 1000000000;
  // localtime_r once per second of records, not per record.
  if (secs != hms_secs_) {
    tm tmv{};
    localtime_r(&secs, &tmv);
    std::snprintf(hms_, sizeof hms_, "%02d:%02d:%02d", tmv.tm_hour, tmv.tm_min,
                  tmv.tm_sec);
    hms_secs_ = secs;
  }
  RowBuf r;
  std::size_t col = r.size();
  r.raw(hms_);
  r.ch('.');
  int ms = int((wall / 1000000) % 1000);
  r.ch(char('0' + ms / 100));
  r.ch(char('0' + ms / 10 % 10));
  r.ch(char('0' + ms % 10));
  r.end_col(col, 12);
  col = r.size();
  r.raw(event_kind_name(e.kind));
  r.end_col(col, 14);
  col = r.size();
  r.num(e.pid);
  r.end_col(col, 7);
  col = r.size();
  r.raw(std::string_view(e.comm, strnlen(e.comm, sizeof e.comm)));
  r.end_col(col, 15);
  col = r.size();
  r.endpoint(e.t.family, e.t.saddr, e.t.sport);
  r.end_col(col, 28);
  col = r.size();
  r.endpoint(e.t.family, e.t.daddr, e.t.dport);
  r.end_col(col, 28);

  switch (e.kind) {
    case PROBES_EV_CONNECT:
      r.key("handshake=");
      r.human_ns(e.duration_ns);
      break;
    case PROBES_EV_ACCEPT:
      r.key("fd=");
      r.num(e.fd);
      r.key("queued=");
      r.human_ns(e.duration_ns);
      break;
    case PROBES_EV_CLOSE:
      r.key("tx=");
      r.num(e.bytes_sent);
      r.key("rx=");
      r.num(e.bytes_received);
      r.key("dur=");
      r.human_ns(e.duration_ns);
      r.key("closer=");
      r.raw(closer_name(e.closer));
      r.key("from=");
      r.raw(tcp_state_name(e.state));
      break;
    case PROBES_EV_CONNECT_FAILED:
      r.key("after=");
      r.human_ns(e.duration_ns);
      break;
    case PROBES_EV_RETRANSMIT:
      r.key("state=");
      r.raw(tcp_state_name(e.state));
      if (e.ret) {
        r.key("err=");
        r.num(e.ret);
      }
      break;
    case PROBES_EV_RESET_SENT:
      r.key("reason=");
      r.raw(enums_->reset_reason(e.reason));
      if (e.state) {
        r.key("state=");
        r.raw(tcp_state_name(e.state));
      }
      break;
    case PROBES_EV_RESET_RECV:
      r.key("state=");
      r.raw(tcp_state_name(e.state));
      break;
    case PROBES_EV_DROP:
      r.key("reason=");
      r.raw(enums_->drop_reason(e.reason));
      r.key("proto=");
      r.num(e.t.proto);
      break;
    case PROBES_EV_RCVQ_FULL:
      r.key("rmem=");
      r.num(e.rmem_alloc);
      r.key("rcvbuf=");
      r.num(e.rcvbuf);
      break;
    case PROBES_EV_SYSCALL:
      r.key(e.op < PROBES_OP_MAX ? kOpNames[e.op] : "?");
      r.key("fd=");
      r.num(e.fd);
      r.key("ret=");
      r.num(e.ret);
      r.key("lat=");
      r.human_ns(e.duration_ns);
      break;
  }
  if (e.sock_ino) {
    r.key("ino=");
    r.num(e.sock_ino);
  }
  return r.str();
}

namespace {

// A small JSON line writer: `bpfmgr events --json` formats every record, so
// it writes into a fixed stack buffer (no growth checks per character, no
// snprintf: those were most of the reader's time per record) and makes one
// string at the end. A record's line is bounded (16-byte comm escaped,
// short enum names, ~25 fields), far below the buffer; anything that would
// not fit is cut and the line ends with "truncated":true.
class JsonLine {
 public:
  JsonLine() { put('{'); }
  JsonLine& u(const char* k, std::uint64_t v) {
    key(k);
    num(v);
    return *this;
  }
  JsonLine& i(const char* k, std::int64_t v) {
    key(k);
    num(v);
    return *this;
  }
  // An address straight into the line (no temporary string).
  JsonLine& addr(const char* k, std::uint16_t family, const std::uint8_t* a) {
    key(k);
    char b[INET6_ADDRSTRLEN] = {};
    put('"');
    if (inet_ntop(family == AF_INET ? AF_INET : AF_INET6, a, b, sizeof b)) raw(b);
    else put('?');
    put('"');
    return *this;
  }
  JsonLine& str(const char* k, std::string_view v) {
    key(k);
    put('"');
    static constexpr char hex[] = "0123456789abcdef";
    for (unsigned char c : v) {
      if (c == '"' || c == '\\') {
        put('\\');
        put(char(c));
      } else if (c == '\n') {
        raw("\\n");
      } else if (c == '\t') {
        raw("\\t");
      } else if (c < 0x20 || c >= 0x7f) {  // comm is bytes, not UTF-8: escape
        raw("\\u00");
        put(hex[c >> 4]);
        put(hex[c & 15]);
      } else {
        put(char(c));
      }
    }
    put('"');
    return *this;
  }
  std::string done() {
    if (full_) {
      // room was kept for this: never cut mid-way through the closing
      len_ = std::min(len_, sizeof buf_ - 32);
      raw(",\"truncated\":true");
    }
    buf_[len_++] = '}';
    return std::string(buf_, len_);
  }

 private:
  static constexpr std::size_t kRoom = 2048 - 48;  // past this: truncated
  void put(char c) {
    if (len_ < kRoom) buf_[len_++] = c;
    else full_ = true;
  }
  void raw(std::string_view v) {
    if (len_ + v.size() <= kRoom) {
      std::memcpy(buf_ + len_, v.data(), v.size());
      len_ += v.size();
    } else {
      full_ = true;
    }
  }
  void key(const char* k) {
    if (len_ > 1) put(',');
    put('"');
    raw(k);
    raw("\":");
  }
  template <class T>
  void num(T v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    raw(std::string_view(b, std::size_t(r.ptr - b)));
  }
  char buf_[2048];
  std::size_t len_ = 0;
  bool full_ = false;
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
      .str("comm", std::string_view(e.comm, strnlen(e.comm, sizeof e.comm)))
      .u("cgroup_id", e.cgroup_id);
  if (e.t.family) {
    j.str("family", e.t.family == AF_INET ? "ipv4" : "ipv6")
        .u("proto", e.t.proto)
        .addr("saddr", e.t.family, e.t.saddr)
        .u("sport", e.t.sport)
        .addr("daddr", e.t.family, e.t.daddr)
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
