// sockops + sockmsg: the same-host TCP bypass, tested with real BPF, real
// sockets and real maps. Every test loads both plugins through the bpfmgr
// binary into its own pin root, attached to its own cgroup; sockets made
// while the process is inside that cgroup are accelerated, others are not.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bypass_common.h"
#include "bypass_workload.hpp"
#include "test_support.hpp"

namespace bt = bpfmgr::test;
namespace bp = bpfmgr::bypass;
using namespace std::chrono_literals;

namespace {

bool soak() { return std::getenv("BPFMGR_SOCKOPS_SOAK") != nullptr; }

// select = "auto" learns through the per-sendmsg sock_ops callback (6.15+);
// older kernels refuse it at validate (docs/sockops.md, "Kernel requirements").
// The core's kernel probe decides, as for validate: `bpfmgr plugins --json`
// says whether the value is usable here and, if not, what is missing.
const std::string& auto_unusable_why() {
  static const std::string why = [] {
    auto r = bt::run_bpfmgr({"plugins", "--json"});
    if (r.exit_code != 0) return "bpfmgr plugins failed: " + r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    const auto& list = j.is_array() ? j : j.value("plugins", nlohmann::json::array());
    for (const auto& p : list) {
      if (p.value("name", "") != "sockops") continue;
      for (const auto& v : p["kernel"]["options"]["select"]) {
        if (v.value("value", "") != "auto") continue;
        if (v.value("usable", false)) return std::string();
        return "select = \"auto\" is not usable on this kernel: " + v["unmet"].dump();
      }
    }
    return std::string("bpfmgr plugins --json does not list sockops' select = \"auto\"");
  }();
  return why;
}
#define SKIP_WITHOUT_AUTO()                                       \
  do {                                                            \
    if (!auto_unusable_why().empty()) GTEST_SKIP() << auto_unusable_why(); \
  } while (0)

// net.ipv4.tcp_rmem's maximum: how far autotuning grows a receive buffer.
std::uint64_t tcp_rmem_max() {
  std::ifstream f("/proc/sys/net/ipv4/tcp_rmem");
  std::uint64_t lo = 0, def = 0, max = 0;
  f >> lo >> def >> max;
  return max;
}

// Writes to reset connections must fail with EPIPE, not kill the test.
const bool kIgnoreSigpipe = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

// Deterministic content: byte at stream offset i of stream `seed`.
inline char pattern(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  x ^= x >> 29;
  return static_cast<char>(x * 0xBF58476D1CE4E5B9ull >> 56);
}

struct ReadResult {
  std::uint64_t bytes = 0;
  std::uint64_t first_mismatch = UINT64_MAX;
  std::uint64_t eagain = 0;  // EAGAIN seen by a *blocking* reader
  int error = 0;             // errno of a read that failed otherwise
  bool eof = false;
};

// Every accelerated test socket gets this SO_RCVTIMEO/SO_SNDTIMEO, so a
// stalled transfer ends its test instead of hanging it.
constexpr auto kStallLimit = std::chrono::seconds(20);
// A whole transfer in one test may take at most this long.
constexpr auto kTrafficDeadline = std::chrono::seconds(120);

void set_stall_timeouts(int fd) {
  timeval tv{static_cast<time_t>(kStallLimit.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Blocking reader: reads until end of stream, checking every byte. An
// EAGAIN that came back before the stall limit is a spurious one (counted
// and retried); one after it, or the traffic deadline, ends the read.
ReadResult read_verify(int fd, std::uint64_t seed, std::size_t buf_size = 65536) {
  ReadResult r;
  std::vector<char> buf(buf_size);
  const auto deadline = std::chrono::steady_clock::now() + kTrafficDeadline;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      const auto now = std::chrono::steady_clock::now();
      if (now - t0 >= kStallLimit - std::chrono::seconds(1) || now > deadline) {
        r.error = ETIMEDOUT;
        return r;
      }
      ++r.eagain;
      continue;
    }
    if (n < 0) {
      r.error = errno;
      return r;
    }
    if (n == 0) {
      r.eof = true;
      return r;
    }
    for (ssize_t i = 0; i < n; ++i)
      if (buf[i] != pattern(seed, r.bytes + i) && r.first_mismatch == UINT64_MAX)
        r.first_mismatch = r.bytes + i;
    r.bytes += n;
  }
}

// Writes `total` bytes of stream `seed` in writes of `chunk`.
void write_pattern(int fd, std::uint64_t seed, std::uint64_t total, std::size_t chunk) {
  std::vector<char> buf(chunk);
  std::uint64_t off = 0;
  while (off < total) {
    std::size_t n = std::min<std::uint64_t>(chunk, total - off);
    for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(seed, off + i);
    bp::write_all(fd, buf.data(), n);
    off += n;
  }
}

// Writes stream `seed` from offset `from` up to `to`, in writes of `chunk`.
void write_pattern_from(int fd, std::uint64_t seed, std::uint64_t from, std::uint64_t to,
                        std::size_t chunk) {
  std::vector<char> buf(chunk);
  for (std::uint64_t off = from; off < to;) {
    std::size_t n = std::min<std::uint64_t>(chunk, to - off);
    for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(seed, off + i);
    bp::write_all(fd, buf.data(), n);
    off += n;
  }
}

// Writes `total` bytes of stream `seed` in random 1-128 B writes (sizes
// drawn from the same seed, so a run is repeatable).
void write_pattern_random(int fd, std::uint64_t seed, std::uint64_t total) {
  std::mt19937 rng(seed);
  std::vector<char> buf(128);
  for (std::uint64_t off = 0; off < total;) {
    std::size_t n = std::min<std::uint64_t>(1 + rng() % 128, total - off);
    for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(seed, off + i);
    bp::write_all(fd, buf.data(), n);
    off += n;
  }
}

template <class T>
T sum_percpu(int fd) {
  int ncpu = libbpf_num_possible_cpus();
  std::vector<T> v(ncpu);
  std::uint32_t zero = 0;
  EXPECT_EQ(bpf_map_lookup_elem(fd, &zero, v.data()), 0) << std::strerror(errno);
  T t{};
  auto* out = reinterpret_cast<std::uint64_t*>(&t);
  for (auto& x : v)
    for (std::size_t i = 0; i < sizeof(T) / 8; ++i)
      out[i] += reinterpret_cast<const std::uint64_t*>(&x)[i];
  return t;
}

class Bypass : public ::testing::Test {
 protected:
  // The manifest of ops (sockops, attached to cg_) and msg (sockmsg), which
  // shares ops' maps (`msg_shares`, TOML lines) or is left out.
  static constexpr const char* kAllShares =
      "sock_hash = \"ops\"\nservices = \"ops\"\nsock_state = \"ops\"\nsock_index = \"ops\"\n";
  std::string manifest_text(const std::string& extra_options = "", bool with_msg = true,
                            const std::string& msg_shares = kAllShares) const {
    return "pin_root = \"" + pins_.path() + "\"\n"
           "[[instance]]\nname = \"ops\"\nplugin = \"sockops\"\n"
           "[instance.options]\ncgroup = \"" + cg_.path() + "\"\n" + extra_options +
           (with_msg ? "[[instance]]\nname = \"msg\"\nplugin = \"sockmsg\"\n"
                       "[instance.maps]\n" + msg_shares
                     : "");
  }
  // Loads sockops and sockmsg sharing its sockhash and the rest.
  void load(const std::string& extra_options = "") {
    manifest_ = bt::write_temp_file(manifest_text(extra_options));
    auto r = bt::run_bpfmgr({"load", manifest_});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    hash_fd_ = bpf_obj_get((pins_.path() + "/ops/maps/sock_hash").c_str());
    ops_fd_ = bpf_obj_get((pins_.path() + "/ops/maps/sockops_counters").c_str());
    msg_fd_ = bpf_obj_get((pins_.path() + "/msg/maps/sockmsg_counters").c_str());
    ASSERT_GE(hash_fd_, 0);
    ASSERT_GE(ops_fd_, 0);
    ASSERT_GE(msg_fd_, 0);
  }
  void TearDown() override {
    cg_.leave();
    for (int fd : {hash_fd_, ops_fd_, msg_fd_})
      if (fd >= 0) ::close(fd);
  }

  // A loopback pair created inside the cgroup: accelerated. Its listener
  // port is one this test has not used: the instance remembers how each
  // service's connections ended (proven by a clean close, half-closing),
  // and a port the kernel hands out again would bring an earlier pair's
  // verdict along (the half-close echo lost acceleration, and a priming
  // connection was counted, about once in 30 runs).
  bp::SocketPair accel_pair(bool nodelay = true, bool v6 = false) {
    for (int tries = 0;; ++tries) {
      cg_.enter();
      auto p = bp::tcp_pair(nodelay, v6);
      cg_.leave();
      if (!services_used_.insert(local_port(p.b)).second && tries < 20) continue;
      EXPECT_LT(tries, 20) << "the kernel kept handing out listener ports used before";
      set_stall_timeouts(p.a);
      set_stall_timeouts(p.b);
      return p;
    }
  }
  static std::uint16_t local_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(ss).sin6_port
                                          : reinterpret_cast<sockaddr_in&>(ss).sin_port);
  }

  std::vector<bypass_key> keys() const {
    std::vector<bypass_key> out;
    bypass_key k{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(hash_fd_, prev, &next) == 0) {
      out.push_back(next);
      k = next;
      prev = &k;
    }
    return out;
  }
  // Sockets in the sockhash; closed sockets leave it asynchronously only
  // in TIME_WAIT edge cases, so poll briefly.
  std::size_t entries_settled(std::size_t want = 0) const {
    std::size_t n = 0;
    for (int i = 0; i < 100; ++i) {
      n = keys().size();
      if (n == want) break;
      std::this_thread::sleep_for(20ms);
    }
    return n;
  }
  std::size_t index_entries() const {
    int fd = bpf_obj_get((pins_.path() + "/ops/maps/sock_index").c_str());
    EXPECT_GE(fd, 0);
    std::size_t n = 0;
    bypass_key k{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      ++n;
      k = next;
      prev = &k;
    }
    ::close(fd);
    return n;
  }
  // Whether the client end of `p` is in the sockhash (accelerated).
  bool in_map(const bp::SocketPair& p) const {
    sockaddr_in a{}, b{};
    socklen_t la = sizeof a, lb = sizeof b;
    getsockname(p.a, reinterpret_cast<sockaddr*>(&a), &la);
    getpeername(p.a, reinterpret_cast<sockaddr*>(&b), &lb);
    for (auto& k : keys())
      if (k.local_port == ntohs(a.sin_port) && k.remote_port == ntohs(b.sin_port))
        return true;
    return false;
  }
  // The learned state of the service listening on `port` (auto mode).
  std::optional<bypass_service> service(std::uint16_t port) const {
    int fd = bpf_obj_get((pins_.path() + "/ops/maps/services").c_str());
    EXPECT_GE(fd, 0);
    std::optional<bypass_service> out;
    bypass_service_key k{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      k = next;
      prev = &k;
      bypass_service v{};
      if (k.port == port && bpf_map_lookup_elem(fd, &k, &v) == 0) out = v;
    }
    ::close(fd);
    return out;
  }
  sockops_counters ops() const { return sum_percpu<sockops_counters>(ops_fd_); }
  sockmsg_counters msg() const { return sum_percpu<sockmsg_counters>(msg_fd_); }

  bt::PinRoot pins_;
  bt::ScopedCgroup cg_;
  std::string manifest_;
  int hash_fd_ = -1, ops_fd_ = -1, msg_fd_ = -1;
  std::set<std::uint16_t> services_used_;  // listener ports of accel_pair()
};

// ------------------------------------------------------------ contract

TEST_F(Bypass, AcceleratedPairIsInTheMapWithConsistentKeys) {
  ASSERT_NO_FATAL_FAILURE(load());
  auto p = accel_pair();
  auto ks = keys();
  ASSERT_EQ(ks.size(), 2u);
  sockaddr_in a{}, b{};
  socklen_t la = sizeof a, lb = sizeof b;
  getsockname(p.a, reinterpret_cast<sockaddr*>(&a), &la);
  getsockname(p.b, reinterpret_cast<sockaddr*>(&b), &lb);
  // Each key is the other's mirror, ports in host order.
  bool seen_client = false, seen_server = false;
  for (auto& k : ks) {
    EXPECT_EQ(k.family, static_cast<std::uint32_t>(AF_INET));
    EXPECT_EQ(k.local_ip[0], htonl(INADDR_LOOPBACK));
    if (k.local_port == ntohs(a.sin_port) && k.remote_port == ntohs(b.sin_port))
      seen_client = true;
    if (k.local_port == ntohs(b.sin_port) && k.remote_port == ntohs(a.sin_port))
      seen_server = true;
    EXPECT_NE(k.netns, 0u);
  }
  EXPECT_TRUE(seen_client);
  EXPECT_TRUE(seen_server);
  EXPECT_EQ(ops().inserted, 2u);

  // Not accelerated: made outside the cgroup.
  auto plain = bp::tcp_pair(true);
  EXPECT_EQ(keys().size(), 2u);
}

// A server in the cgroup whose client is not: the client never enters the
// map, so neither does the server end (nothing could be redirected).
TEST_F(Bypass, ServerWithoutAcceleratedClientStaysOut) {
  ASSERT_NO_FATAL_FAILURE(load());
  cg_.enter();
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cg_.leave();
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  socklen_t sl = sizeof sa;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &sl);
  ::listen(ls, 4);
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // outside
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(ls);
  bp::SocketPair p(c, s);
  bp::write_all(p.b, "hi", 2);
  char b[2];
  bp::read_all(p.a, b, 2);
  EXPECT_EQ(ops().skipped_no_peer, 1u);
  EXPECT_EQ(ops().inserted, 0u);
  EXPECT_EQ(keys().size(), 0u);
  EXPECT_EQ(index_entries(), 0u);
}

TEST_F(Bypass, StatusAndBpftoolShowNamedFields) {
  ASSERT_NO_FATAL_FAILURE(load());
  auto p = accel_pair();
  bp::write_all(p.a, "hello", 5);
  char buf[5];
  bp::read_all(p.b, buf, 5);
  auto r = bt::run_bpfmgr({"status", "--pin-root", pins_.path(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  std::map<std::string, std::uint64_t> counters;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& x) {
    if (x.is_object() && x.contains("counters") && x["counters"].is_array())
      for (auto& c : x["counters"]) counters[c["name"]] = c["value"];
    if (x.is_array() || x.is_object())
      for (auto& e : x) walk(e);
  };
  walk(j);
  EXPECT_EQ(counters["inserted"], 2u);
  EXPECT_EQ(counters["redirected_msgs"], 1u);
  EXPECT_EQ(counters["redirected_bytes"], 5u);
  EXPECT_EQ(counters["sockets_in_map"], 2u);

  // The kernel refuses BTF on sockhash maps; sock_index mirrors it.
  auto d = bt::run({"bpftool", "map", "dump", "pinned", pins_.path() + "/ops/maps/sock_index"});
  EXPECT_NE(d.out.find("\"local_port\""), std::string::npos) << d.out << d.err;
  EXPECT_NE(d.out.find("\"remote_ip\""), std::string::npos);
  auto c = bt::run({"bpftool", "map", "dump", "pinned",
                    pins_.path() + "/msg/maps/sockmsg_counters"});
  EXPECT_NE(c.out.find("\"redirected_bytes\""), std::string::npos) << c.out;
}

// ------------------------------------------------------------ byte streams

// One direction at a time, every write size, counters must match exactly.
TEST_F(Bypass, ByteExactStreamsAtEveryWriteSize) {
  ASSERT_NO_FATAL_FAILURE(load());
  struct Case {
    std::size_t chunk;
    std::uint64_t total;
  };
  std::vector<Case> cases{{1, 64 << 10},       {64, 1 << 20},      {1024, 4 << 20},
                          {16384, 16 << 20},   {65536, 16 << 20},  {1 << 20, 32 << 20},
                          {100u << 20, 100u << 20}};
  std::uint64_t seed = 1;
  for (auto c : cases)
    for (bool reverse : {false, true}) {
      SCOPED_TRACE("chunk " + std::to_string(c.chunk) + (reverse ? " b->a" : " a->b"));
      auto p = accel_pair();
      auto before = msg();  // after the pair's priming connection
      int w = reverse ? p.b : p.a, rd = reverse ? p.a : p.b;
      ++seed;
      std::thread writer([&] {
        write_pattern(w, seed, c.total, c.chunk);
        ::shutdown(w, SHUT_WR);
      });
      auto r = read_verify(rd, seed);
      writer.join();
      EXPECT_TRUE(r.eof);
      EXPECT_EQ(r.error, 0) << std::strerror(r.error);
      EXPECT_EQ(r.bytes, c.total);
      EXPECT_EQ(r.first_mismatch, UINT64_MAX);
      EXPECT_EQ(r.eagain, 0u) << "blocking reader saw EAGAIN";
      auto after = msg();
      // Every byte was redirected, or passed because the reader fell a
      // quarter of its buffer behind (the queue bound): nothing else.
      EXPECT_EQ(after.redirected_bytes - before.redirected_bytes +
                    after.passed_bytes - before.passed_bytes,
                c.total);
      EXPECT_EQ(after.passed_msgs - before.passed_msgs,
                after.passed_overflow - before.passed_overflow +
                    after.passed_sticky - before.passed_sticky);
      // Writes of up to 64 KiB are redirected. Larger ones are when the
      // reader's buffer can grow to 4x the message: the kernel's autotuning
      // limit, net.ipv4.tcp_rmem[2], is 32 MiB on recent kernels (6.18
      // here) but 6 MiB on 6.1 and 6.12, where a 1 MiB message crosses the
      // quarter-buffer bound and takes TCP by design: then the bound must
      // be why).
      if (c.chunk <= (64u << 10) || tcp_rmem_max() >= (32u << 20)) {
        EXPECT_GT(after.redirected_bytes, before.redirected_bytes);
      } else if (after.redirected_bytes == before.redirected_bytes) {
        EXPECT_GT(after.passed_overflow, before.passed_overflow)
            << "nothing redirected, and not for the queue bound";
      }
      if (c.total >= (100u << 20)) break;  // 100 MiB once
    }
}

// Both directions at once on many connections.
TEST_F(Bypass, ConcurrentFullDuplexConnections) {
  ASSERT_NO_FATAL_FAILURE(load());
  constexpr int kConns = 8;
  // 1 B writes cost a syscall each: size each stream by its write size.
  auto bytes_for = [](std::size_t chunk) -> std::uint64_t {
    return chunk < 64 ? (128 << 10) : (4 << 20);
  };
  std::vector<bp::SocketPair> pairs;
  for (int i = 0; i < kConns; ++i) pairs.push_back(accel_pair());
  EXPECT_EQ(keys().size(), 2u * kConns);
  std::vector<std::thread> ts;
  std::vector<ReadResult> res(2 * kConns);
  std::uint64_t expected = 0;
  for (int i = 0; i < kConns; ++i) {
    auto& p = pairs[i];
    std::size_t chunk = std::size_t{1} << (i % 8 * 2);  // 1 B .. 16 KiB
    std::uint64_t n = bytes_for(chunk);
    expected += 2 * n;
    ts.emplace_back([&p, i, chunk, n] {
      write_pattern(p.a, 100 + i, n, chunk);
      ::shutdown(p.a, SHUT_WR);
    });
    ts.emplace_back([&p, i, chunk, n] {
      write_pattern(p.b, 200 + i, n, chunk);
      ::shutdown(p.b, SHUT_WR);
    });
    ts.emplace_back([&p, &res, i] { res[2 * i] = read_verify(p.b, 100 + i); });
    ts.emplace_back([&p, &res, i] { res[2 * i + 1] = read_verify(p.a, 200 + i); });
  }
  for (auto& t : ts) t.join();
  for (int i = 0; i < 2 * kConns; ++i) {
    auto& r = res[i];
    EXPECT_EQ(r.bytes, bytes_for(std::size_t{1} << (i / 2 % 8 * 2)));
    EXPECT_EQ(r.first_mismatch, UINT64_MAX);
    EXPECT_TRUE(r.eof);
    EXPECT_EQ(r.error, 0);
  }
  EXPECT_EQ(msg().redirected_bytes + msg().passed_bytes, expected);
  EXPECT_EQ(msg().passed_msgs, msg().passed_overflow + msg().passed_sticky)
      << "passed only by the queue bound";
  pairs.clear();
  EXPECT_EQ(entries_settled(0), 0u);
}

// Small SO_SNDBUF, non-blocking writer with partial writes, non-blocking
// edge-triggered epoll reader.
TEST_F(Bypass, PartialWritesAndEdgeTriggeredEpoll) {
  ASSERT_NO_FATAL_FAILURE(load());
  cg_.enter();
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&sa), sl), 0);
  ASSERT_EQ(::listen(ls, 4), 0);
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &sl);
  bp::prime_service(ls, reinterpret_cast<sockaddr*>(&sa), sl);  // a proven service
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int small = 4096;
  ::setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&sa), sl), 0);
  int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  cg_.leave();
  ::close(ls);
  ::setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ::fcntl(c, F_SETFL, O_NONBLOCK);
  bp::SocketPair guard(c, s);
  ASSERT_EQ(keys().size(), 2u);

  constexpr std::uint64_t kTotal = 24 << 20;
  std::atomic<std::uint64_t> partial{0};
  std::thread writer([&] {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{EPOLLOUT | EPOLLET, {}};
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    std::vector<char> buf(256 * 1024);
    std::uint64_t off = 0;
    std::mt19937 rng(7);
    while (off < kTotal) {
      std::size_t n = std::min<std::uint64_t>(1 + rng() % buf.size(), kTotal - off);
      for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(42, off + i);
      ssize_t w = ::write(c, buf.data(), n);
      if (w < 0 && errno == EAGAIN) {
        epoll_event out;
        epoll_wait(ep, &out, 1, 1000);
        continue;
      }
      ASSERT_GT(w, 0) << std::strerror(errno);
      if (static_cast<std::size_t>(w) < n) ++partial;
      off += w;
    }
    ::shutdown(c, SHUT_WR);
    ::close(ep);
  });
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{EPOLLIN | EPOLLRDHUP | EPOLLET, {}};
  epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
  std::vector<char> buf(7919);  // odd size: reads split messages
  std::uint64_t got = 0, bad = UINT64_MAX;
  bool eof = false;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!eof && std::chrono::steady_clock::now() < deadline) {
    epoll_event out;
    if (epoll_wait(ep, &out, 1, 1000) <= 0) continue;
    for (;;) {  // edge-triggered: drain until EAGAIN
      ssize_t n = ::read(s, buf.data(), buf.size());
      if (n < 0 && errno == EAGAIN) break;
      ASSERT_GE(n, 0) << std::strerror(errno);
      if (n == 0) {
        eof = true;
        break;
      }
      for (ssize_t i = 0; i < n; ++i)
        if (buf[i] != pattern(42, got + i) && bad == UINT64_MAX) bad = got + i;
      got += n;
    }
  }
  writer.join();
  ::close(ep);
  EXPECT_TRUE(eof);
  EXPECT_EQ(got, kTotal);
  EXPECT_EQ(bad, UINT64_MAX);
  EXPECT_EQ(msg().redirected_bytes + msg().passed_bytes, kTotal);
  EXPECT_EQ(msg().passed_msgs, msg().passed_overflow) << "passed only by the queue bound";
  RecordProperty("partial_writes", std::to_string(partial.load()));
}

// ------------------------------------------------------------ half-close

// The KERNEL-NOTES reproducer: a bidirectional echo of random 1-128 B writes
// ended by shutdown(SHUT_WR) on the client while a second client thread
// reads. Every byte must come back, in order, and end of stream only after
// the last one. Repeated to catch a 1-in-10 failure with p > 0.95.
TEST_F(Bypass, HalfCloseEchoNeverLosesBytes) {
  ASSERT_NO_FATAL_FAILURE(load());
  const int runs = soak() ? 100 : 40;
  const std::uint64_t total = soak() ? 12800000 : (2 << 20);
  std::uint64_t eagain_total = 0;
  // Each run half-closes and reads on, which marks its service as never
  // to be accelerated again (docs/sockops.md); accel_pair() gives every
  // run a service of its own.
  for (int run = 0; run < runs; ++run) {
    SCOPED_TRACE("run " + std::to_string(run));
    auto p = accel_pair(false);
    std::thread server([fd = p.b] {  // echo until EOF, then half-close
      std::vector<char> buf(65536);
      for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) break;
        bp::write_all(fd, buf.data(), n);
      }
      ::shutdown(fd, SHUT_WR);
    });
    std::thread writer([fd = p.a, run, total] {
      write_pattern_random(fd, run, total);
      ::shutdown(fd, SHUT_WR);
    });
    auto r = read_verify(p.a, run);
    writer.join();
    server.join();
    ASSERT_EQ(r.error, 0) << std::strerror(r.error);
    ASSERT_TRUE(r.eof);
    ASSERT_EQ(r.bytes, total) << "lost " << total - r.bytes << " bytes";
    ASSERT_EQ(r.first_mismatch, UINT64_MAX);
    eagain_total += r.eagain;
  }
  EXPECT_EQ(ops().half_closed, 2u * runs);
  EXPECT_EQ(msg().passed_msgs, msg().passed_overflow) << "passed only by the queue bound";
  // Known kernel behaviour (docs/sockops.md): a blocking reader may get one
  // EAGAIN when another thread half-closes the same socket. Reported, and
  // the retry above proves no data was behind it.
  RecordProperty("blocking_reader_eagain", std::to_string(eagain_total));
  std::cout << "[ info ] spurious EAGAIN on blocking reads: " << eagain_total << " in "
            << runs << " runs\n";
}

// ------------------------------------------------- plain blocking readers
//
// Issue 18's shape, as most programs are written: the client writes N
// messages of one size from one thread, then shutdown(SHUT_WR); the server
// echoes with blocking read()/write() and closes once read() returns <= 0;
// the client reads with blocking read() until it returns <= 0, and nothing
// retries an EAGAIN. Every size, both families, with a reader that pauses
// (the queue bound is crossed) and without. A bounded sample in the suite;
// BPFMGR_SOCKOPS_INTEGRITY_RUNS=200 runs that many per test (mode).

struct IntegrityTally {
  int runs = 0, accelerated = 0, exact = 0, lost = 0, reordered = 0, extra = 0;
  int eos_not_zero = 0;  // ended with -1 (EAGAIN, ...) instead of read() == 0
  // Failed runs that were the first half-closing connection of their
  // service, accelerated before the service could be known to half-close
  // (select = "all"; docs/sockops.md, "Blocking readers"). Included above.
  int first_half_close_failures = 0;
  int other_failures = 0;  // failed runs that were not a first half-close
  std::uint64_t lost_bytes = 0;
  std::string first_failure;  // every failed run, one per line
};

struct EchoRun {
  std::uint64_t got = 0, mismatch = UINT64_MAX;
  int end_errno = 0;  // 0: read() returned 0
};

// One run on `p` (p.a the client, p.b the server end).
// half_close: the client writer ends with shutdown(SHUT_WR) and the reader
// reads until read() <= 0 (issue 18's shape); otherwise the reader reads
// until it has every byte (each read() <= 0 before that is a failure) and
// then closes, the way a request/response client ends.
EchoRun blocking_echo(bp::SocketPair& p, std::size_t size, std::uint64_t count, bool pause,
                      bool half_close, std::uint64_t seed) {
  std::thread server([fd = p.b] {
    std::vector<char> buf(65536);
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n <= 0) break;  // a plain server: 0 or an error ends it
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(fd, buf.data() + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) return;
        off += w;
      }
    }
    ::shutdown(fd, SHUT_RDWR);  // the close, without racing the fd number
  });
  std::thread writer([fd = p.a, size, count, seed, half_close] {
    std::vector<char> buf(size);
    for (std::uint64_t m = 0; m < count; ++m) {
      for (std::size_t i = 0; i < size; ++i) buf[i] = pattern(seed, m * size + i);
      for (std::size_t off = 0; off < size;) {
        ssize_t w = ::send(fd, buf.data() + off, size - off, MSG_NOSIGNAL);
        if (w <= 0) return;
        off += w;
      }
    }
    if (half_close) ::shutdown(fd, SHUT_WR);
  });
  EchoRun r;
  const std::uint64_t total = size * count;
  std::vector<char> buf(65536);
  bool paused = !pause;
  while (half_close || r.got < total) {
    ssize_t n = ::read(p.a, buf.data(), buf.size());
    if (n <= 0) {
      r.end_errno = n == 0 ? (half_close ? 0 : ECONNRESET) : errno;
      break;
    }
    for (ssize_t i = 0; i < n; ++i)
      if (buf[i] != pattern(seed, r.got + i) && r.mismatch == UINT64_MAX) r.mismatch = r.got + i;
    r.got += n;
    if (!paused) {  // the echo piles up behind a reader that stops a while
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      paused = true;
    }
  }
  ::shutdown(p.a, SHUT_RDWR);  // a reader that stopped early frees the others
  writer.join();
  server.join();
  return r;
}

// Runs `runs` echoes round-robin over sizes x families x half-close x
// pause, each (half-close, size, family) one service (a kept listener), so
// both modes learn what it does.
IntegrityTally integrity_runs(const std::function<bp::SocketPair(bp::Listener&)>& connect,
                              const std::function<bool(const bp::SocketPair&)>& accelerated,
                              int runs) {
  struct Shape {
    std::size_t size;
    std::uint64_t count;
  };
  const Shape shapes[] = {{1, 20000}, {64, 4096}, {1024, 1024}, {65536, 32}, {1 << 20, 4}};
  const std::size_t ns = std::size(shapes);
  // One service per (half-close, family, size).
  std::vector<std::unique_ptr<bp::Listener>> listeners;
  for (int i = 0; i < 4; ++i)
    for (std::size_t s = 0; s < ns; ++s)
      listeners.push_back(std::make_unique<bp::Listener>(i % 2 == 1));
  IntegrityTally t;
  std::vector<bool> half_closed_before(listeners.size(), false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(30);
  for (int run = 0; run < runs && std::chrono::steady_clock::now() < deadline; ++run) {
    // Every size under one variant, then the next. The first three already
    // cover a service proven by a clean close, then accelerated with the
    // reader pausing (the queue bound), and a half-closing one: a short run
    // (15 in a kernel-matrix guest) shows each.
    struct Variant {
      bool half_close, v6, pause;
    };
    static constexpr Variant kVariants[] = {
        {false, false, false}, {false, false, true}, {true, false, false},
        {false, true, false},  {false, true, true},  {true, true, false},
        {true, false, true},   {true, true, true}};
    const std::size_t shape = run % ns;
    const auto& variant = kVariants[(run / ns) % std::size(kVariants)];
    const bool v6 = variant.v6;
    const bool half_close = variant.half_close;
    const bool pause = variant.pause;
    const std::size_t li = ((half_close ? 0 : 2) + (v6 ? 1 : 0)) * ns + shape;
    auto& l = *listeners[li];
    const bool first_half_close = half_close && !half_closed_before[li];
    if (half_close) half_closed_before[li] = true;
    auto p = connect(l);
    set_stall_timeouts(p.a);
    set_stall_timeouts(p.b);
    const auto& sh = shapes[shape];
    const std::uint64_t total = sh.size * sh.count;
    const bool accel = accelerated(p);
    auto r = blocking_echo(p, sh.size, sh.count, pause, half_close, 1000 + run);
    ++t.runs;
    t.accelerated += accel;
    std::string what;
    if (r.mismatch != UINT64_MAX) {
      ++t.reordered;
      what = "content differs at byte " + std::to_string(r.mismatch);
    } else if (r.got < total) {
      ++t.lost;
      t.lost_bytes += total - r.got;
      what = "lost " + std::to_string(total - r.got) + " of " + std::to_string(total) + " bytes";
    } else if (r.got > total) {
      ++t.extra;
      what = "got " + std::to_string(r.got - total) + " bytes too many";
    } else {
      ++t.exact;
    }
    if (r.end_errno) {
      ++t.eos_not_zero;
      if (what.empty()) what = "every byte, but read() ended with -1";
      what += " (read: " + std::string(std::strerror(r.end_errno)) + ")";
    }
    if (!what.empty() && first_half_close && accel) ++t.first_half_close_failures;
    else if (!what.empty()) ++t.other_failures;
    if (!what.empty())
      t.first_failure += std::string(t.first_failure.empty() ? "" : "\n  ") + "run " + std::to_string(run) + ", " + std::to_string(sh.size) +
                        " B x " + std::to_string(sh.count) + (v6 ? ", tcp6" : ", tcp") +
                        (half_close ? ", half-close" : ", no half-close") +
                        (pause ? ", pausing reader" : "") + (accel ? ", accelerated" : ", on TCP") +
                        ": " + what;
  }
  return t;
}

int integrity_runs_wanted() {
  if (const char* e = std::getenv("BPFMGR_SOCKOPS_INTEGRITY_RUNS")) return std::max(1, std::atoi(e));
  return 80;  // each of the 40 shapes twice: about a minute per mode
}

void report(const char* mode, const IntegrityTally& t) {
  std::cout << "[ info ] blocking echo, " << mode << ": " << t.runs << " runs ("
            << t.accelerated << " accelerated): " << t.exact << " byte-exact, " << t.lost
            << " lost (" << t.lost_bytes << " bytes), " << t.reordered << " reordered, "
            << t.extra << " duplicated, " << t.eos_not_zero
            << " ended with -1 instead of 0; of the failed runs, "
            << t.first_half_close_failures
            << " were the first half-closing connection of their service\n";
  if (!t.first_failure.empty()) std::cout << "[ info ] failures:\n  " << t.first_failure << "\n";
}

void expect_clean(const IntegrityTally& t) {
  EXPECT_EQ(t.first_half_close_failures, 0) << t.first_failure;
  EXPECT_EQ(t.lost, 0) << t.first_failure;
  EXPECT_EQ(t.reordered, 0) << t.first_failure;
  EXPECT_EQ(t.extra, 0) << t.first_failure;
  EXPECT_EQ(t.eos_not_zero, 0) << t.first_failure;
}

TEST(BlockingEcho, PlainTcpBaseline) {
  const int runs = std::min(20, integrity_runs_wanted());
  auto t = integrity_runs([](bp::Listener& l) { return l.connect(false); },
                          [](const bp::SocketPair&) { return false; }, runs);
  report("plain TCP", t);
  expect_clean(t);
}

TEST_F(Bypass, BlockingEchoSelectAllLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(load());
  cg_.enter();
  auto t = integrity_runs([](bp::Listener& l) { return l.connect(false); },
                          [this](const bp::SocketPair& p) { return in_map(p); },
                          integrity_runs_wanted());
  cg_.leave();
  report("select = all", t);
  std::cout << "[ info ] queue_bound " << msg().queue_bound << ", passed_overflow "
            << msg().passed_overflow << ", redirected_msgs " << msg().redirected_msgs
            << ", kept on TCP: half-close " << ops().skipped_half_close << ", unproven "
            << ops().skipped_unproven << ", clean closes " << ops().clean_closes << "\n";
  // A service starts on TCP and is accelerated only once one of its
  // connections closed cleanly, never once one half-closed and read on:
  // every run byte-exact with a clean end, the half-closing services never
  // accelerated, the others accelerated from their second connection (with
  // the queue bound crossed when the reader pauses).
  expect_clean(t);
  if (t.runs > 2 * 5) {  // from the third variant on
    EXPECT_GT(ops().half_close_reads, 0u);
  }
  // The second variant's connections are each a proven service's second.
  if (t.runs >= 2 * 5) {
    EXPECT_GT(t.accelerated, 0);
  }
  if (t.runs >= 40) {
    EXPECT_GT(msg().queue_bound, 0u) << "the pausing reader should cross the bound";
  }
  RecordProperty("accelerated_runs", std::to_string(t.accelerated));
}

// select = "all" starts a service on TCP; a connection that exchanged data
// and closed without half-closing proves it; one that only connected and
// closed (a health check) does not.
TEST_F(Bypass, SelectAllAcceleratesAServiceOnlyAfterACleanClose) {
  ASSERT_NO_FATAL_FAILURE(load());
  cg_.enter();
  bp::Listener l;
  {
    auto p = l.connect(true);  // connects and closes: proves nothing
    EXPECT_FALSE(in_map(p));
  }
  {
    auto p = l.connect(true);
    EXPECT_FALSE(in_map(p));
  }
  l.prime();  // one byte each way, clean close
  auto p = l.connect(true);
  cg_.leave();
  EXPECT_TRUE(in_map(p));
  auto svc = service(l.port());
  ASSERT_TRUE(svc);
  EXPECT_EQ(svc->clean_closes, 1u);
  EXPECT_EQ(svc->half_closes, 0u);
  EXPECT_EQ(ops().skipped_unproven, 3u);  // the two above and the priming one
  bp::write_all(p.a, "ok", 2);
  char b[2];
  bp::read_all(p.b, b, 2);
  EXPECT_EQ(msg().redirected_bytes, 2u);
}

TEST_F(Bypass, BlockingEchoSelectAutoLosesNothing) {
  SKIP_WITHOUT_AUTO();
  ASSERT_NO_FATAL_FAILURE(load("select = \"auto\"\n"));
  cg_.enter();
  auto t = integrity_runs([](bp::Listener& l) { return l.connect(false); },
                          [this](const bp::SocketPair& p) { return in_map(p); },
                          integrity_runs_wanted());
  cg_.leave();
  report("select = auto", t);
  std::cout << "[ info ] queue_bound " << msg().queue_bound << ", redirected_msgs "
            << msg().redirected_msgs << "\n";
  expect_clean(t);
}

TEST_F(Bypass, EndOfStreamOnlyAfterEveryByteAndCloseWithDataQueued) {
  ASSERT_NO_FATAL_FAILURE(load());
  for (int i = 0; i < 20; ++i) {
    auto p = accel_pair();
    const std::uint64_t total = 256 * 1024 + i;
    write_pattern(p.a, 900 + i, total, 4096);  // all queued before any read
    if (i % 2) {
      ::close(p.a);  // close with data still unread at the peer
      p.a = -1;
    } else {
      ::shutdown(p.a, SHUT_WR);
    }
    auto r = read_verify(p.b, 900 + i);
    EXPECT_TRUE(r.eof);
    EXPECT_EQ(r.bytes, total);
    EXPECT_EQ(r.first_mismatch, UINT64_MAX);
  }
  EXPECT_EQ(entries_settled(0), 0u);
}

TEST_F(Bypass, ResetReachesThePeerAndLeavesNoEntry) {
  ASSERT_NO_FATAL_FAILURE(load());
  auto p = accel_pair();
  bp::write_all(p.a, "abc", 3);
  char buf[16];
  bp::read_all(p.b, buf, 3);
  linger lg{1, 0};
  ::setsockopt(p.a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(p.a);  // RST
  p.a = -1;
  ssize_t n;
  do n = ::read(p.b, buf, sizeof buf);
  while (n < 0 && (errno == EINTR || errno == EAGAIN));
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, ECONNRESET);
  // The reset socket refuses to send (ECONNRESET was consumed by the read).
  EXPECT_LT(::send(p.b, "x", 1, MSG_NOSIGNAL), 0);
  EXPECT_EQ(errno, EPIPE);
  p = bp::SocketPair();
  EXPECT_EQ(entries_settled(0), 0u);
}

// ------------------------------------------------------------ lifecycle

TEST_F(Bypass, ChurnLeavesNoEntryBehind) {
  ASSERT_NO_FATAL_FAILURE(load());
  const int n = 100000;  // ~5 s here; TIME_WAIT spread over 4 listeners
  cg_.enter();
  // Four listeners so TIME_WAIT 4-tuples never exhaust the ephemeral range.
  std::vector<int> ls;
  std::vector<sockaddr_in> addr(4);
  for (auto& a : addr) {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), l), 0);
    ASSERT_EQ(::listen(s, 512), 0);
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &l);
    bp::prime_service(s, reinterpret_cast<sockaddr*>(&a), l);  // a proven service
    ls.push_back(s);
  }
  auto t0 = std::chrono::steady_clock::now();
  int failures = 0;
  for (int i = 0; i < n; ++i) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    auto& a = addr[i % 4];
    if (::connect(c, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      ++failures;
      ::close(c);
      continue;
    }
    int s = ::accept4(ls[i % 4], nullptr, nullptr, SOCK_CLOEXEC);
    char b = 'x';
    bp::write_all(c, &b, 1);
    bp::read_all(s, &b, 1);
    if (i % 3 == 0) {  // a third end with RST
      linger lg{1, 0};
      ::setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    ::close(c);
    ::close(s);
  }
  cg_.leave();
  for (int s : ls) ::close(s);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(entries_settled(0), 0u);
  EXPECT_EQ(index_entries(), 0u) << "sock_index kept entries of closed sockets";
  auto o = ops();
  EXPECT_EQ(o.inserted, 2u * n);
  EXPECT_EQ(o.insert_failed, 0u);
  EXPECT_EQ(msg().redirected_msgs, static_cast<std::uint64_t>(n));
  std::cout << "[ info ] " << n << " connections in " << secs << " s\n";
}

// Unpin while a stream runs: no byte lost, duplicated or reordered; the
// connection goes on over TCP; the kernel objects go away with the last
// accelerated socket.
std::uint32_t obj_id(int fd, bool prog) {
  if (prog) {
    bpf_prog_info info{};
    std::uint32_t len = sizeof info;
    return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
  }
  bpf_map_info info{};
  std::uint32_t len = sizeof info;
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

// The programs running as the sockhash's sk_msg verdict.
std::vector<std::uint32_t> verdict_ids(int hash) {
  std::uint32_t ids[4], count = 4, flags = 0;
  EXPECT_EQ(bpf_prog_query(hash, BPF_SK_MSG_VERDICT, 0, &flags, ids, &count), 0)
      << std::strerror(errno);
  return {ids, ids + count};
}

// Where a load of `manifest` makes or switches sockmsg's verdict: the
// number of the bpf() call after it, to kill the load at, and whether it
// was a plain attachment (before Linux 6.10) rather than a link.
struct VerdictStep {
  int kill_at = 0;
  bool plain = false;
};
VerdictStep trace_verdict_step(const std::string& manifest) {
  auto log = bt::write_temp_file("", ".strace");
  auto traced = bt::run({"strace", "-f", "-qq", "-o", log, "-e", "trace=bpf", "-e", "signal=none",
                         bt::bpfmgr_binary(), "--log-level", "off", "load", manifest});
  EXPECT_EQ(traced.exit_code, 0) << traced.err;
  VerdictStep step;
  int calls = 0;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("bpf(") == std::string::npos) continue;
    ++calls;
    bool verdict = line.find("BPF_SK_MSG_VERDICT") != std::string::npos;
    bool attach = verdict && line.find("BPF_PROG_ATTACH") != std::string::npos;
    if (attach || line.find("BPF_LINK_UPDATE") != std::string::npos ||
        (verdict && line.find("BPF_LINK_CREATE") != std::string::npos)) {
      step.kill_at = calls + 1;
      step.plain = attach;
    }
  }
  if (step.kill_at > calls) step.kill_at = 0;  // nothing after it to kill at
  return step;
}

bpfmgr::bench::CommandResult load_killed_at(const std::string& manifest, int bpf_call) {
  return bt::run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                  "inject=bpf:signal=SIGKILL:when=" + std::to_string(bpf_call),
                  bt::bpfmgr_binary(), "--log-level", "off", "load", manifest});
}

// Before Linux 6.10 sockmsg's verdict is a plain attachment to the
// sockhash sockops owns: no fd holds it, so it outlives a killed load. The
// staged record must name it before it is made, for the next command to
// undo it (a sockmap link, on newer kernels, dies with the process).
TEST_F(Bypass, ALoadKilledRightAfterTheVerdictAttachmentLeavesNothingAttached) {
  auto path = bt::write_temp_file(manifest_text("", false));
  auto write = [&](bool with_msg) { std::ofstream(path, std::ios::trunc) << manifest_text("", with_msg); };
  ASSERT_EQ(bt::run_bpfmgr({"load", path}).exit_code, 0);
  int hash = bpf_obj_get((pins_.path() + "/ops/maps/sock_hash").c_str());
  ASSERT_GE(hash, 0);
  std::shared_ptr<void> close_hash(nullptr, [hash](void*) { ::close(hash); });
  // The kill point, in a load that adds msg.
  write(true);
  auto step = trace_verdict_step(path);
  ASSERT_GT(step.kill_at, 0) << "no sk_msg attachment in the traced load";
  ASSERT_EQ(verdict_ids(hash).size(), 1u);
  write(false);
  ASSERT_EQ(bt::run_bpfmgr({"load", path}).exit_code, 0);
  ASSERT_EQ(verdict_ids(hash).size(), 0u);

  write(true);
  ASSERT_NE(load_killed_at(path, step.kill_at).exit_code, 0) << "the load was not killed";
  write(false);
  auto next = bt::run_bpfmgr({"load", path});
  EXPECT_EQ(next.exit_code, 0) << next.err;
  EXPECT_EQ(verdict_ids(hash).size(), 0u)
      << "the killed load's verdict is still attached to the sockhash";
  EXPECT_EQ(bt::run_bpfmgr({"unpin", "--pin-root", pins_.path()}).exit_code, 0);
}

// A reload that stages msg again (here: it shares fewer maps) puts its new
// program in the place of its own previous one, a plain attachment before
// Linux 6.10 as a link after; a reload killed right after that leaves the
// previous program running once the next command has reverted it.
TEST_F(Bypass, AReloadOfSockmsgReplacesItsOwnVerdictAndACrashGivesItBack) {
  ASSERT_NO_FATAL_FAILURE(load());
  auto pinned_msg = [&] {
    int fd = bpf_obj_get((pins_.path() + "/msg/progs/bypass_sk_msg").c_str());
    auto id = obj_id(fd, true);
    ::close(fd);
    return id;
  };
  auto first = pinned_msg();
  ASSERT_EQ(verdict_ids(hash_fd_), std::vector<std::uint32_t>{first});
  auto full = manifest_text();
  auto fewer = manifest_text("", true, "sock_hash = \"ops\"\n");
  auto write = [&](const std::string& text) { std::ofstream(manifest_, std::ios::trunc) << text; };

  write(fewer);
  auto step = trace_verdict_step(manifest_);  // the reload, traced
  ASSERT_GT(step.kill_at, 0) << "the reload made or switched no verdict";
  auto second = pinned_msg();
  EXPECT_NE(second, first);
  EXPECT_EQ(verdict_ids(hash_fd_), std::vector<std::uint32_t>{second});
  auto st = bt::run_bpfmgr({"status", "--json", "--pin-root", pins_.path()});
  EXPECT_EQ(st.out.find("\"drift\""), std::string::npos) << st.out;

  // Back to sharing all, then the same reload killed right after it.
  write(full);
  ASSERT_EQ(bt::run_bpfmgr({"load", manifest_}).exit_code, 0);
  auto committed = pinned_msg();
  write(fewer);
  ASSERT_NE(load_killed_at(manifest_, step.kill_at).exit_code, 0) << "the reload was not killed";
  write(full);
  auto next = bt::run_bpfmgr({"load", manifest_});
  ASSERT_EQ(next.exit_code, 0) << next.err;
  // A plain attachment is given back by the revert, so msg is unchanged; a
  // link switched in place before the staging record is drift, repaired.
  if (step.plain) {
    EXPECT_EQ(next.err.find("repaired: msg"), std::string::npos) << next.err;
    EXPECT_EQ(pinned_msg(), committed);
  }
  EXPECT_EQ(verdict_ids(hash_fd_), std::vector<std::uint32_t>{pinned_msg()});
  st = bt::run_bpfmgr({"status", "--json", "--pin-root", pins_.path()});
  EXPECT_EQ(st.out.find("\"drift\""), std::string::npos) << st.out;
}

TEST_F(Bypass, UnpinMidTrafficLosesNothing) {
  // Buffers left at tcp_rmem[1]: below the size the queue bound applies to,
  // so the slow reader keeps the stream on redirects until the unpin.
  ASSERT_NO_FATAL_FAILURE(load("rcvbuf = 0\n"));
  // The IDs of this instance's objects: they must all be gone once the
  // last accelerated socket closes (other test runs may load the same
  // names concurrently, so names alone prove nothing).
  std::vector<std::uint32_t> maps, progs;
  for (auto m : {"ops/maps/sock_hash", "ops/maps/sock_index", "ops/maps/sockops_counters",
                 "msg/maps/sockmsg_counters", "msg/maps/sockmsg_ctl"}) {
    int fd = bpf_obj_get((pins_.path() + "/" + m).c_str());
    maps.push_back(obj_id(fd, false));
    ::close(fd);
  }
  for (auto p : {"ops/progs/bypass_sockops", "msg/progs/bypass_sk_msg"}) {
    int fd = bpf_obj_get((pins_.path() + "/" + p).c_str());
    progs.push_back(obj_id(fd, true));
    ::close(fd);
  }
  for (auto id : maps) ASSERT_NE(id, 0u);
  for (auto id : progs) ASSERT_NE(id, 0u);
  int counters = ::dup(msg_fd_);  // keep reading after the pins are gone
  constexpr std::uint64_t kTotal = 96 << 20;
  {
    auto p = accel_pair();
    std::atomic<std::uint64_t> sent{0};
    std::atomic<bool> unpinned{false};
    std::thread writer([&] {
      std::vector<char> buf(4096);
      while (sent < kTotal) {
        // The last third waits for the unpin to end, so traffic always
        // flows before, during and after it (in a TCG guest `bpfmgr unpin`
        // took longer than the whole 96 MiB: the test proved nothing).
        while (sent >= 2 * kTotal / 3 && !unpinned)
          std::this_thread::sleep_for(1ms);
        std::uint64_t off = sent;
        std::size_t n = std::min<std::uint64_t>(buf.size(), kTotal - off);
        for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(77, off + i);
        bp::write_all(p.a, buf.data(), n);
        sent += n;
      }
      ::shutdown(p.a, SHUT_WR);
    });
    ReadResult r;
    std::thread reader([&] { r = read_verify(p.b, 77, 3000); });  // slow reads
    while (sent < kTotal / 3) std::this_thread::sleep_for(1ms);
    auto u = bt::run_bpfmgr({"unpin", "--pin-root", pins_.path()});
    std::uint64_t at_unpin = sent;
    unpinned = true;
    EXPECT_EQ(u.exit_code, 0) << u.err;
    writer.join();
    reader.join();
    EXPECT_TRUE(r.eof);
    EXPECT_EQ(r.bytes, kTotal);
    EXPECT_EQ(r.first_mismatch, UINT64_MAX);
    EXPECT_LT(at_unpin, kTotal) << "the stream ended before unpin: test proves nothing";
    auto c = sum_percpu<sockmsg_counters>(counters);
    EXPECT_GT(c.passed_draining, 0u) << "traffic after unpin should take the TCP path";
    EXPECT_EQ(c.redirected_bytes + c.passed_bytes, kTotal);
  }
  ::close(counters);
  for (int* fd : {&hash_fd_, &ops_fd_, &msg_fd_}) {
    ::close(*fd);
    *fd = -1;
  }
  auto alive = [&] {
    std::string out;
    for (auto id : maps) {
      int fd = bpf_map_get_fd_by_id(id);
      if (fd >= 0) {
        out += "map " + std::to_string(id) + " ";
        ::close(fd);
      }
    }
    for (auto id : progs) {
      int fd = bpf_prog_get_fd_by_id(id);
      if (fd >= 0) {
        out += "prog " + std::to_string(id) + " ";
        ::close(fd);
      }
    }
    return out;
  };
  std::string left;
  for (int i = 0; i < 150; ++i) {  // freed through RCU / workqueues
    left = alive();
    if (left.empty()) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(left, "") << "still alive after the last socket closed";
}

// ------------------------------------------------------------ scope

TEST_F(Bypass, NonLocalPeerInNetnsNeverEntersTheMap) {
  bt::NetNs ns;
  std::string host = "bsx" + std::to_string(::getpid() % 100000);
  std::string peer = host + "p";
  std::string subnet = "10.213." + std::to_string(::getpid() % 250) + ".";
  ASSERT_EQ(bt::run({"ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns",
                     ns.name()}).exit_code, 0);
  struct LinkGuard {
    std::string n;
    ~LinkGuard() { bt::run({"ip", "link", "del", n}); }
  } guard{host};
  bt::run({"ip", "addr", "add", subnet + "1/24", "dev", host});
  bt::run({"ip", "link", "set", host, "up"});
  ns.exec({"ip", "addr", "add", subnet + "2/24", "dev", peer});
  ns.exec({"ip", "link", "set", peer, "up"});
  ns.exec({"ip", "link", "set", "lo", "up"});
  ASSERT_NO_FATAL_FAILURE(load());  // after the veth exists: its host address counts as local

  cg_.enter();
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, (subnet + "1").c_str(), &sa.sin_addr);
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ::listen(ls, 4);
  socklen_t sl = sizeof sa;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &sl);
  int c = -1;
  std::thread t([&] {
    bt::InNetNs in(ns.name());
    c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    for (int i = 0; i < 50; ++i) {  // DAD / link up may take a moment
      if (::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) return;
      std::this_thread::sleep_for(50ms);
    }
    ::close(c);
    c = -1;
  });
  t.join();
  ASSERT_GE(c, 0) << "cannot reach the host from the netns";
  int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  cg_.leave();
  ::close(ls);
  bp::SocketPair p(c, s);
  bp::write_all(p.a, "ping", 4);
  char buf[4];
  bp::read_all(p.b, buf, 4);
  EXPECT_EQ(keys().size(), 0u);
  EXPECT_EQ(ops().skipped_not_local, 2u);
  EXPECT_EQ(ops().inserted, 0u);
  EXPECT_EQ(msg().redirected_msgs, 0u);
}

TEST_F(Bypass, ExcludedPortIsUntouched) {
  // Reserve a port, then load with it excluded. The listener is made in
  // the cgroup: accepted sockets take the listener's cgroup.
  cg_.enter();
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cg_.leave();
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  socklen_t sl = sizeof sa;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &sl);
  ::listen(ls, 4);
  ASSERT_NO_FATAL_FAILURE(load("exclude_ports = [" + std::to_string(ntohs(sa.sin_port)) + "]\n"));
  cg_.enter();
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  auto other = bp::tcp_pair(true);  // any other port is accelerated
  cg_.leave();
  ::close(ls);
  bp::SocketPair p(c, s);
  bp::write_all(p.a, "x", 1);
  char b;
  bp::read_all(p.b, &b, 1);
  EXPECT_EQ(ops().skipped_filtered, 2u);
  EXPECT_EQ(keys().size(), 2u);  // only `other`
  EXPECT_EQ(msg().redirected_msgs, 0u);
}

TEST_F(Bypass, Ipv6LoopbackAndV4MappedAreAccelerated) {
  ASSERT_NO_FATAL_FAILURE(load());
  {
    auto p = accel_pair(true, /*v6=*/true);
    EXPECT_EQ(keys().size(), 2u);
    bp::write_all(p.a, "six", 3);
    char b[3];
    bp::read_all(p.b, b, 3);
  }
  EXPECT_EQ(msg().redirected_bytes, 3u);
  EXPECT_EQ(entries_settled(0), 0u);

  // AF_INET6 client to ::ffff:127.0.0.1, AF_INET server: one key space.
  cg_.enter();
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  socklen_t sl = sizeof sa;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &sl);
  ::listen(ls, 4);
  bp::prime_service(ls, reinterpret_cast<sockaddr*>(&sa), sl);  // a proven service
  int c = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 s6{};
  s6.sin6_family = AF_INET6;
  s6.sin6_port = sa.sin_port;
  inet_pton(AF_INET6, "::ffff:127.0.0.1", &s6.sin6_addr);
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&s6), sizeof s6), 0);
  int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  cg_.leave();
  ::close(ls);
  bp::SocketPair p(c, s);
  auto ks = keys();
  ASSERT_EQ(ks.size(), 2u);
  for (auto& k : ks) EXPECT_EQ(k.family, static_cast<std::uint32_t>(AF_INET));
  bp::write_all(p.a, "mapped", 6);
  bp::write_all(p.b, "back", 4);
  char b[6];
  bp::read_all(p.b, b, 6);
  bp::read_all(p.a, b, 4);
  EXPECT_EQ(msg().redirected_bytes, 3u + 6u + 4u);
  EXPECT_EQ(msg().redirect_failed, 0u);
}

// sendfile() into an accelerated socket works (it is a sendmsg with
// MSG_SPLICE_PAGES, which the sockmap send path handles). splice() *out of*
// an accelerated socket reads only the TCP receive queue, never the
// redirected data: it sees nothing while the bytes wait for read().
TEST_F(Bypass, SendfileWorksSpliceReadSeesOnlyTheTcpQueue) {
  ASSERT_NO_FATAL_FAILURE(load());
  char path[] = "/tmp/bpfmgr-sockops-XXXXXX";
  int f = ::mkstemp(path);
  ASSERT_GE(f, 0);
  ::unlink(path);
  constexpr std::uint64_t kSize = 3 << 20;
  write_pattern(f, 5, kSize, 65536);
  auto p = accel_pair();
  std::thread sender([&] {
    off_t off = 0;
    const auto deadline = std::chrono::steady_clock::now() + kTrafficDeadline;
    while (static_cast<std::uint64_t>(off) < kSize &&
           std::chrono::steady_clock::now() < deadline)
      if (::sendfile(p.a, f, &off, kSize - off) <= 0 && errno != EINTR) break;
    ::shutdown(p.a, SHUT_WR);
  });
  auto r = read_verify(p.b, 5);
  sender.join();
  ::close(f);
  EXPECT_EQ(r.bytes, kSize);
  EXPECT_EQ(r.first_mismatch, UINT64_MAX);
  EXPECT_EQ(msg().redirected_bytes + msg().passed_bytes, kSize);
  EXPECT_EQ(msg().passed_msgs, msg().passed_overflow);

  auto q = accel_pair();
  bp::write_all(q.a, "spliced?", 8);
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC | O_NONBLOCK), 0);
  // tcp_splice_read() blocks on a blocking socket whatever the splice flags.
  ::fcntl(q.b, F_SETFL, O_NONBLOCK);
  ssize_t n = ::splice(q.b, nullptr, pipefd[1], nullptr, 8, SPLICE_F_NONBLOCK);
  EXPECT_EQ(n, -1) << "splice read found data it should not see";
  EXPECT_EQ(errno, EAGAIN);
  char b[8];
  bp::read_all(q.b, b, 8);  // read() gets it (read_all retries EAGAIN)
  EXPECT_EQ(std::string(b, 8), "spliced?");
  ::close(pipefd[0]);
  ::close(pipefd[1]);
}

// ------------------------------------------------------------ select = auto

// Request/response round trips of `size` bytes on p, checked byte by byte.
void rr_verify(bp::SocketPair& p, std::size_t size, int iters, std::uint64_t seed) {
  std::vector<char> req(size), got(size);
  for (int i = 0; i < iters; ++i) {
    for (std::size_t j = 0; j < size; ++j) req[j] = pattern(seed, i * size + j);
    bp::write_all(p.a, req.data(), size);
    bp::read_all(p.b, got.data(), size);
    ASSERT_EQ(std::memcmp(req.data(), got.data(), size), 0) << "request " << i;
    bp::write_all(p.b, got.data(), size);
    bp::read_all(p.a, got.data(), size);
    ASSERT_EQ(std::memcmp(req.data(), got.data(), size), 0) << "response " << i;
  }
}

// One-way stream of `total` bytes in `chunk` writes, end of stream, checked.
void stream_verify(bp::SocketPair& p, std::uint64_t total, std::size_t chunk,
                   std::uint64_t seed) {
  std::thread writer([&] {
    write_pattern(p.a, seed, total, chunk);
    ::shutdown(p.a, SHUT_WR);
  });
  auto r = read_verify(p.b, seed);
  writer.join();
  EXPECT_EQ(r.error, 0);
  EXPECT_TRUE(r.eof);
  EXPECT_EQ(r.bytes, total);
  EXPECT_EQ(r.first_mismatch, UINT64_MAX);
}

// The documented convergence: a new service runs on TCP until it has
// min_samples (2) samples; request/response gives two per connection (both
// ends write), one-way bulk one (the writer).
constexpr int kConvergeConnections = 2;

TEST_F(Bypass, AutoAcceleratesRequestResponseButNotSmallWriteBulk) {
  SKIP_WITHOUT_AUTO();
  ASSERT_NO_FATAL_FAILURE(load("select = \"auto\"\n"));
  cg_.enter();
  bp::Listener rr, bulk;
  std::vector<bool> rr_accel, bulk_accel;
  for (int i = 0; i < 6; ++i) {
    auto p = rr.connect(true);
    rr_accel.push_back(in_map(p));
    rr_verify(p, 1024, 64, i);
  }
  for (int i = 0; i < 6; ++i) {
    auto p = bulk.connect(false);
    bulk_accel.push_back(in_map(p));
    stream_verify(p, 1 << 20, 64, 100 + i);
  }
  cg_.leave();
  EXPECT_FALSE(rr_accel[0]) << "a new service starts on TCP";
  for (int i = kConvergeConnections - 1; i < 6; ++i)
    EXPECT_TRUE(rr_accel[i]) << "request/response connection " << i;
  for (int i = 0; i < 6; ++i) EXPECT_FALSE(bulk_accel[i]) << "bulk connection " << i;
  auto r = service(rr.port()), b = service(bulk.port());
  ASSERT_TRUE(r && b);
  EXPECT_EQ(r->decision, BYPASS_DECIDE_ACCELERATE);
  EXPECT_EQ(r->shape, BYPASS_SHAPE_REQUEST_RESPONSE);
  EXPECT_EQ(b->decision, BYPASS_DECIDE_TCP);
  EXPECT_EQ(b->shape, BYPASS_SHAPE_BULK_SMALL);
  EXPECT_EQ(b->avg_write, 64u);
  EXPECT_EQ(b->accelerated, 0u);
  EXPECT_GE(msg().samples_accel, 2u) << "accelerated connections keep being sampled";
  EXPECT_EQ(ops().auto_accelerated, r->accelerated);
  // Learning on TCP costs a window of sendmsg callbacks per connection end
  // (plus the writes until the next ACK closes it), not one per message:
  // the bulk connections wrote 16384 times each.
  EXPECT_LT(ops().learn_callbacks, 12u * 2 * 256);
  std::cout << "[ info ] learning callbacks: " << ops().learn_callbacks << "\n";
  std::cout << "[ info ] rr service: samples " << r->samples << " accelerated "
            << r->accelerated << " kept_tcp " << r->kept_tcp << "; bulk: samples "
            << b->samples << " kept_tcp " << b->kept_tcp << "\n";
}

TEST_F(Bypass, AutoAcceleratesLargeWriteBulk) {
  SKIP_WITHOUT_AUTO();
  ASSERT_NO_FATAL_FAILURE(load("select = \"auto\"\n"));
  cg_.enter();
  bp::Listener bulk;
  std::vector<bool> accel;
  for (int i = 0; i < 5; ++i) {
    auto p = bulk.connect(true);
    accel.push_back(in_map(p));
    stream_verify(p, 8 << 20, 128 << 10, 200 + i);
  }
  cg_.leave();
  EXPECT_FALSE(accel[0]);
  for (int i = kConvergeConnections; i < 5; ++i) EXPECT_TRUE(accel[i]) << "connection " << i;
  auto b = service(bulk.port());
  ASSERT_TRUE(b);
  EXPECT_EQ(b->shape, BYPASS_SHAPE_BULK_LARGE);
}

// A request/response service that turns into small-write bulk goes back to
// TCP within a few connections, and back again.
TEST_F(Bypass, AutoRelearnsAServiceThatChangesShape) {
  SKIP_WITHOUT_AUTO();
  ASSERT_NO_FATAL_FAILURE(load("select = \"auto\"\n"));
  cg_.enter();
  bp::Listener svc;
  for (int i = 0; i < 3; ++i) {
    auto p = svc.connect(true);
    rr_verify(p, 64, 64, i);
  }
  int to_tcp = -1, back = -1;
  for (int i = 0; i < 8 && to_tcp < 0; ++i) {
    auto p = svc.connect(true);
    if (!in_map(p)) to_tcp = i;
    stream_verify(p, 256 << 10, 64, 300 + i);
  }
  for (int i = 0; i < 8 && back < 0; ++i) {
    auto p = svc.connect(true);
    if (in_map(p)) back = i;
    rr_verify(p, 64, 64, 400 + i);
  }
  cg_.leave();
  std::cout << "[ info ] re-learned to TCP after " << to_tcp
            << " bulk connections, back to the bypass after " << back << "\n";
  EXPECT_GE(to_tcp, 1) << "the first bulk connection was decided as request/response";
  EXPECT_LE(to_tcp, 4);
  EXPECT_GE(back, 1);
  EXPECT_LE(back, 3);
}

// The spurious-EAGAIN echo (docs/sockops.md): in auto mode a bidirectional
// small-write echo is bulk, stays on TCP, and a reader that stops at the
// first read() <= 0 gets every byte.
TEST_F(Bypass, AutoKeepsHalfCloseEchoOnTcpAndLosesNothing) {
  SKIP_WITHOUT_AUTO();
  ASSERT_NO_FATAL_FAILURE(load("select = \"auto\"\n"));
  cg_.enter();
  bp::Listener echo;
  const int runs = 24;
  const std::uint64_t total = 1 << 20;
  int accelerated = 0;
  for (int run = 0; run < runs; ++run) {
    SCOPED_TRACE("run " + std::to_string(run));
    auto p = echo.connect(false);
    accelerated += in_map(p);
    std::thread server([fd = p.b] {
      std::vector<char> buf(65536);
      for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        bp::write_all(fd, buf.data(), n);
      }
      ::shutdown(fd, SHUT_WR);
    });
    std::thread writer([fd = p.a, run, total] {
      write_pattern_random(fd, run, total);
      ::shutdown(fd, SHUT_WR);
    });
    // The strict reader: the first read() <= 0 ends it.
    std::uint64_t got = 0;
    std::vector<char> buf(65536);
    bool mismatch = false;
    for (;;) {
      ssize_t n = ::read(p.a, buf.data(), buf.size());
      if (n <= 0) break;
      for (ssize_t i = 0; i < n && !mismatch; ++i)
        mismatch = buf[i] != pattern(run, got + i);
      got += n;
    }
    writer.join();
    server.join();
    auto e = service(echo.port());
    if (std::getenv("BYPASS_DEBUG") && e)
      std::cout << "run " << run << " shape " << e->shape << " decision " << e->decision
                << " rr " << e->rr_score << " avg " << e->avg_write << " samples "
                << e->samples << "\n";
    ASSERT_EQ(got, total) << "lost " << total - got << " bytes; accelerated " << in_map(p)
                          << " shape " << (e ? e->shape : 99) << " rr_score "
                          << (e ? e->rr_score : 0) << " samples " << (e ? e->samples : 0);
    ASSERT_FALSE(mismatch);
  }
  cg_.leave();
  EXPECT_EQ(accelerated, 0);
  auto e = service(echo.port());
  ASSERT_TRUE(e);
  EXPECT_NE(e->decision, BYPASS_DECIDE_ACCELERATE);
  std::cout << "[ info ] echo service: shape " << e->shape << " rr_score " << e->rr_score
            << " avg_write " << e->avg_write << " samples " << e->samples << "\n";
}

// ------------------------------------------------------------ queue bound

// A peer that stops reading: the writer is moved to TCP once the queue
// reaches half the reader's sk_rcvbuf, then TCP's window blocks it; once the
// reader reads again everything arrives, in order, with no stall.
TEST_F(Bypass, QueueBoundHoldsAgainstAReaderThatStopsAndNothingStalls) {
  ASSERT_NO_FATAL_FAILURE(load());
  auto p = accel_pair(true);
  int rcvbuf = 0, sndbuf = 0;
  socklen_t len = sizeof rcvbuf;
  ASSERT_EQ(getsockopt(p.b, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len), 0);
  ASSERT_EQ(getsockopt(p.a, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len), 0);
  // Fill: non-blocking 64 KiB writes until the writer is blocked for 1 s.
  int fl = fcntl(p.a, F_GETFL);
  ASSERT_EQ(fcntl(p.a, F_SETFL, fl | O_NONBLOCK), 0);
  const std::size_t chunk = 64 << 10;
  std::uint64_t written = 0;
  std::vector<char> buf(chunk);
  auto idle_since = std::chrono::steady_clock::now();
  const std::uint64_t limit = 256ull << 20;
  while (written < limit && std::chrono::steady_clock::now() - idle_since < 1s) {
    for (std::size_t i = 0; i < chunk; ++i) buf[i] = pattern(7, written + i);
    ssize_t n = ::write(p.a, buf.data(), chunk);
    if (n < 0 && errno == EAGAIN) {
      std::this_thread::sleep_for(5ms);
      continue;
    }
    ASSERT_GT(n, 0) << std::strerror(errno);
    // A partial write leaves the rest of this chunk unsent: continue the
    // pattern from where the stream is.
    written += n;
    idle_since = std::chrono::steady_clock::now();
  }
  // Documented bound: half the reader's buffer plus one message on the
  // ingress queue, then what TCP holds (the reader's buffer + our send
  // buffer, with their truesize overheads).
  const std::uint64_t bound = rcvbuf / 2 + chunk + 2ull * rcvbuf + 2ull * sndbuf;
  std::cout << "[ info ] a non-reading peer let the writer queue " << (written >> 10)
            << " KiB (reader SO_RCVBUF " << (rcvbuf >> 10) << " KiB, writer SO_SNDBUF "
            << (sndbuf >> 10) << " KiB, bound " << (bound >> 10) << " KiB)\n";
  EXPECT_LT(written, limit) << "the writer was never blocked";
  EXPECT_LE(written, bound);
  EXPECT_EQ(msg().queue_bound, 1u);
  // Read again: everything arrives, and the writer finishes 64 MiB more
  // on the TCP path within a deadline (the stall measured before crawled
  // on persist-timer backoff).
  ASSERT_EQ(fcntl(p.a, F_SETFL, fl), 0);
  const std::uint64_t more = 64ull << 20;
  auto t0 = std::chrono::steady_clock::now();
  std::thread writer([&] {
    write_pattern_from(p.a, 7, written, written + more, chunk);
    ::shutdown(p.a, SHUT_WR);
  });
  auto r = read_verify(p.b, 7);
  writer.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.error, 0);
  EXPECT_TRUE(r.eof);
  EXPECT_EQ(r.bytes, written + more);
  EXPECT_EQ(r.first_mismatch, UINT64_MAX);
  // The stall this guards against lasted minutes (persist-timer backoff);
  // a TCG guest (BPFMGR_IN_GUEST, the kernel matrix) moves bytes 17-33x
  // slower than the host: 12x the bound there, still far below a stall.
  const double limit_s = std::getenv("BPFMGR_IN_GUEST") ? 120.0 : 10.0;
  EXPECT_LT(secs, limit_s) << "stalled";
  std::cout << "[ info ] drained and streamed 64 MiB more in " << secs
            << " s; back to redirects " << msg().queue_resumed << " times\n";
}

}  // namespace
