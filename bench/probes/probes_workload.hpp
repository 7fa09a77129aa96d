// probes: the workloads the benchmarks time (bench_probes and
// bench_probes_peers), header-only so both harnesses run exactly the same
// loops; tests/probes borrows its Fd. Benchmark code: it lives under bench/,
// never in the shipped plugin.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace bpfmgr::probes::workload {

inline std::uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CPU time of the calling thread: syscall and BPF time are charged to it,
// time other processes take on this busy 2-vCPU machine is not.
inline std::uint64_t cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// ns per 1-byte write() to /dev/null (a traced syscall on a non-socket).
inline double devnull_write_ns(std::uint64_t iters) {
  Fd f(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  if (f.fd < 0) throw std::runtime_error("open /dev/null");
  char c = 'x';
  std::uint64_t t0 = cpu_ns();
  for (std::uint64_t i = 0; i < iters; ++i)
    if (::write(f.fd, &c, 1) != 1) throw std::runtime_error("write");
  return double(cpu_ns() - t0) / double(iters);
}

// ns per getpid(): a syscall nobody traces, but every syscall hook sees.
inline double getpid_ns(std::uint64_t iters) {
  std::uint64_t t0 = cpu_ns();
  for (std::uint64_t i = 0; i < iters; ++i) ::syscall(SYS_getpid);
  return double(cpu_ns() - t0) / double(iters);
}

// A unix datagram socket pair: 1-byte write then 1-byte read; returns ns
// per syscall (both are traced socket syscalls).
struct SocketPair {
  Fd a, b;
  SocketPair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv))
      throw std::runtime_error("socketpair");
    a = Fd(sv[0]);
    b = Fd(sv[1]);
  }
};

inline double socketpair_rw_ns(std::uint64_t iters) {
  SocketPair p;
  char c = 'x';
  std::uint64_t t0 = cpu_ns();
  for (std::uint64_t i = 0; i < iters; ++i) {
    if (::write(p.a.fd, &c, 1) != 1 || ::read(p.b.fd, &c, 1) != 1)
      throw std::runtime_error("socketpair write/read");
  }
  return double(cpu_ns() - t0) / double(iters) / 2.0;
}

// Writes `count` 1-byte messages through a socket pair at about `rate` per
// second (0: as fast as possible); returns the achieved rate.
inline double paced_socketpair(std::uint64_t count, double rate) {
  SocketPair p;
  char c = 'x';
  std::uint64_t t0 = now_ns();
  const std::uint64_t batch = 64;
  for (std::uint64_t i = 0; i < count; i += batch) {
    std::uint64_t n = std::min(batch, count - i);
    for (std::uint64_t k = 0; k < n; ++k) {
      // One traced write + one traced read per message: 2 events.
      if (::write(p.a.fd, &c, 1) != 1 || ::read(p.b.fd, &c, 1) != 1)
        throw std::runtime_error("socketpair write/read");
    }
    if (rate > 0) {
      std::uint64_t due = t0 + std::uint64_t(double(i + n) * 1e9 / rate);
      while (now_ns() < due) {
        std::uint64_t left = due - now_ns();
        if (left > 200000) std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
  }
  double secs = double(now_ns() - t0) / 1e9;
  return double(count) / secs;
}

// Loopback TCP connection churn: connect, accept, close both, for `secs`.
// Returns connections per second.
inline double tcp_churn_per_sec(double secs, bool ipv6 = false) {
  int fam = ipv6 ? AF_INET6 : AF_INET;
  Fd l(::socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (l.fd < 0) throw std::runtime_error("socket");
  int one = 1;
  ::setsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t sl;
  if (ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    sl = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sl = sizeof *a;
  }
  if (::bind(l.fd, reinterpret_cast<sockaddr*>(&ss), sl) || ::listen(l.fd, 128))
    throw std::runtime_error("bind/listen");
  ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  std::uint64_t n = 0, t0 = now_ns(), end = t0 + std::uint64_t(secs * 1e9);
  while (now_ns() < end) {
    for (int k = 0; k < 32; ++k) {
      Fd c(::socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (::connect(c.fd, reinterpret_cast<sockaddr*>(&ss), sl))
        throw std::runtime_error("connect");
      Fd s(::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC));
      if (s.fd < 0) throw std::runtime_error("accept");
      // Server closes first: the TIME_WAIT lands on the server side, whose
      // port is fixed, so the client's ephemeral ports never run out.
      s.reset();
      c.reset();
      ++n;
    }
  }
  return double(n) / (double(now_ns() - t0) / 1e9);
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace bpfmgr::probes::workload
