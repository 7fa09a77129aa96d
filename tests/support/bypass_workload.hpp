// Socket workloads shared by tests/sockops and bench/sockops: connected
// pairs over loopback TCP and AF_UNIX, request/response round trips and
// one-way streaming.
// Header-only; every function throws std::runtime_error on a socket error.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace bpfmgr::bypass {

inline void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// Two connected stream sockets; closes both on destruction.
struct SocketPair {
  int a = -1;  // client end
  int b = -1;  // server end
  SocketPair() = default;
  SocketPair(int x, int y) : a(x), b(y) {}
  SocketPair(SocketPair&& o) noexcept : a(o.a), b(o.b) { o.a = o.b = -1; }
  SocketPair& operator=(SocketPair&& o) noexcept {
    std::swap(a, o.a);
    std::swap(b, o.b);
    return *this;
  }
  SocketPair(const SocketPair&) = delete;
  SocketPair& operator=(const SocketPair&) = delete;
  ~SocketPair() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
};

inline void set_nodelay(int fd, bool on) {
  int v = on ? 1 : 0;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v)) fail("TCP_NODELAY");
}

// A connection to the listening socket `ls` (address `sa`), both ends.
inline SocketPair connect_accepted(int ls, const sockaddr* sa, socklen_t len) {
  int c = ::socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0) fail("socket");
  if (::connect(c, sa, len)) {
    int e = errno;
    ::close(c);
    errno = e;
    fail("connect");
  }
  int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) {
    int e = errno;
    ::close(c);
    errno = e;
    fail("accept");
  }
  return SocketPair(c, s);
}

// One short connection to the listening socket `ls` (address `sa`) that
// exchanges a byte each way and closes cleanly, client end first: what
// sockops needs to have seen of a service before it accelerates any of its
// connections (docs/sockops.md, "Blocking readers"). Returns once the
// client end reached TCP_CLOSE (its state callback has run), at most after
// a second. Harmless where nothing watches.
inline void prime_service(int ls, const sockaddr* sa, socklen_t len) {
  auto p = connect_accepted(ls, sa, len);
  const int c = p.a, s = p.b;
  char x = 'p';
  bool ok = ::write(c, &x, 1) == 1 && ::read(s, &x, 1) == 1 && ::write(s, &x, 1) == 1 &&
            ::read(c, &x, 1) == 1;
  ::shutdown(c, SHUT_RDWR);
  while (ok && ::read(s, &x, 1) > 0) {
  }
  ::close(s);
  p.b = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (;;) {
    tcp_info ti{};
    socklen_t tl = sizeof ti;
    if (::getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tl) || ti.tcpi_state == TCP_CLOSE ||
        std::chrono::steady_clock::now() > deadline)
      break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!ok) fail("prime exchange");  // p closes the client end
}

// A loopback TCP connection through a fresh listener on an ephemeral port,
// after one priming connection to it (prime_service).
// `v6` uses ::1. The cgroup of the calling process at this moment decides
// whether a sock_ops program sees the sockets.
inline SocketPair tcp_pair(bool nodelay, bool v6 = false) {
  int fam = v6 ? AF_INET6 : AF_INET;
  int ls = ::socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) fail("socket");
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_addr = in6addr_loopback;
    len = sizeof(*s6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*s4);
  }
  if (::bind(ls, reinterpret_cast<sockaddr*>(&ss), len) || ::listen(ls, 4) ||
      ::getsockname(ls, reinterpret_cast<sockaddr*>(&ss), &len)) {
    int e = errno;
    ::close(ls);
    errno = e;
    fail("listen");
  }
  try {
    prime_service(ls, reinterpret_cast<sockaddr*>(&ss), len);
  } catch (...) {
    ::close(ls);
    throw;
  }
  int c = ::socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&ss), len)) {
    int e = errno;
    ::close(ls);
    if (c >= 0) ::close(c);
    errno = e;
    fail("connect");
  }
  int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(ls);
  if (s < 0) {
    ::close(c);
    fail("accept");
  }
  set_nodelay(c, nodelay);
  set_nodelay(s, nodelay);
  return SocketPair(c, s);
}

// A listening loopback socket kept open across connections: one *service*
// for sockops' auto mode (which learns per listening port). The cgroup of
// the creating process decides the cgroup of the sockets it accepts.
class Listener {
 public:
  explicit Listener(bool v6 = false) : v6_(v6) {
    fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) fail("socket");
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (v6) {
      auto* s6 = reinterpret_cast<sockaddr_in6*>(&addr_);
      s6->sin6_family = AF_INET6;
      s6->sin6_addr = in6addr_loopback;
      len_ = sizeof(*s6);
    } else {
      auto* s4 = reinterpret_cast<sockaddr_in*>(&addr_);
      s4->sin_family = AF_INET;
      s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len_ = sizeof(*s4);
    }
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr_), len_) || ::listen(fd_, 64) ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr_), &len_)) {
      int e = errno;
      ::close(fd_);
      errno = e;
      fail("listen");
    }
  }
  ~Listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  std::uint16_t port() const {
    return ntohs(v6_ ? reinterpret_cast<const sockaddr_in6*>(&addr_)->sin6_port
                     : reinterpret_cast<const sockaddr_in*>(&addr_)->sin_port);
  }
  // One clean priming connection (prime_service).
  void prime() const {
    prime_service(fd_, reinterpret_cast<const sockaddr*>(&addr_), len_);
  }
  // A new connection to this service; the cgroup of the calling process
  // at this moment decides whether sock_ops sees the client end.
  SocketPair connect(bool nodelay) const {
    auto p = connect_accepted(fd_, reinterpret_cast<const sockaddr*>(&addr_), len_);
    set_nodelay(p.a, nodelay);
    set_nodelay(p.b, nodelay);
    return p;
  }

 private:
  bool v6_;
  int fd_ = -1;
  sockaddr_storage addr_{};
  socklen_t len_ = 0;
};

inline SocketPair unix_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)) fail("socketpair");
  return SocketPair(fds[0], fds[1]);
}

inline void write_all(int fd, const char* p, std::size_t n) {
  while (n) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Reads exactly n bytes. A blocking read may return EAGAIN on a socket in a
// sockmap (see docs/sockops.md, "spurious EAGAIN"); it is retried here, but
// only until `limit` has passed: a peer that never sends ends the caller.
inline void read_all(int fd, char* p, std::size_t n,
                     std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (n) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        if (std::chrono::steady_clock::now() > deadline)
          throw std::runtime_error("read: no data within the deadline");
        continue;
      }
      fail("read");
    }
    if (r == 0) throw std::runtime_error("read: unexpected end of stream");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Echoes fixed-size requests on `fd` until it reads end of stream.
class Echoer {
 public:
  Echoer(int fd, std::size_t size)
      : thread_([fd, size] {
          std::vector<char> buf(size);
          try {
            for (;;) {
              read_all(fd, buf.data(), size);
              write_all(fd, buf.data(), size);
            }
          } catch (const std::exception&) {
          }
        }) {}
  // Ends the client end `fd` as a request/response client does, by closing
  // (SHUT_RDWR: the fd stays valid). Not shutdown(SHUT_WR): sockops keeps a
  // service whose two-way connections half-close on TCP.
  void stop(int fd) {
    ::shutdown(fd, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  ~Echoer() {
    if (thread_.joinable()) thread_.detach();
  }

 private:
  std::thread thread_;
};

// `iters` request/response round trips of `size` bytes; returns the mean
// round trip in nanoseconds. The pair's b end is echoed by a thread.
inline double rr_mean_ns(SocketPair& p, std::size_t size, std::size_t iters) {
  Echoer echo(p.b, size);
  std::vector<char> buf(size, 'x');
  auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < iters; ++i) {
    write_all(p.a, buf.data(), size);
    read_all(p.a, buf.data(), size);
  }
  auto t1 = std::chrono::steady_clock::now();
  echo.stop(p.a);
  return std::chrono::duration<double, std::nano>(t1 - t0).count() /
         static_cast<double>(iters);
}

// Streams `total` bytes a -> b in writes of `chunk`; returns bytes/second
// measured at the reader (until the last byte arrived).
inline double stream_bps(SocketPair& p, std::size_t chunk, std::size_t total) {
  std::atomic<bool> failed{false};
  std::thread reader([&] {
    std::vector<char> buf(256 * 1024);
    std::size_t got = 0;
    while (got < total) {
      ssize_t r = ::read(p.b, buf.data(), buf.size());
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) {
        failed = true;
        return;
      }
      got += static_cast<std::size_t>(r);
    }
  });
  std::vector<char> buf(chunk, 'y');
  auto t0 = std::chrono::steady_clock::now();
  std::size_t sent = 0;
  try {
    while (sent < total) {
      std::size_t n = std::min(chunk, total - sent);
      write_all(p.a, buf.data(), n);
      sent += n;
    }
  } catch (...) {
    ::shutdown(p.a, SHUT_RDWR);
    reader.join();
    throw;
  }
  reader.join();
  auto t1 = std::chrono::steady_clock::now();
  if (failed) throw std::runtime_error("stream reader failed");
  return static_cast<double>(total) /
         std::chrono::duration<double>(t1 - t0).count();
}

}  // namespace bpfmgr::bypass
