// Two "hosts" on one machine, for harnesses and tests of network plugins:
// each a network namespace plus a cgroup v2 child, joined by a veth pair;
// processes placed in them (Child) and small socket helpers for the
// workloads run between them. Part of bpfmgr::bench (header-only).
//
// bpffs and cgroups are not per-netns, so a "host" is a cgroup whose
// processes live in a netns: a Child joins both before running its body.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bpfmgr/bench/fixtures.hpp>
#include <bpfmgr/bench/process.hpp>

namespace bpfmgr::bench {

namespace detail {
inline std::runtime_error sys_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}
}  // namespace detail

struct ExecResult {
  int exit_code = -1;
  std::string out;  // stdout + stderr
};
// Runs argv (no shell); stdout and stderr together, for messages.
inline ExecResult exec(const std::vector<std::string>& argv) {
  auto r = run(argv);
  return {r.exit_code, r.out + r.err};
}

struct Host {
  std::string netns;   // ip netns name (/run/netns/<netns>)
  std::string cgroup;  // absolute cgroup v2 path
  std::string ifname;  // veth end inside netns
  std::string addr4;   // e.g. 10.201.0.1
  std::string addr6;   // e.g. fd00:201::1
};

// Creates both hosts; the destructor deletes the netns (and so the veth)
// and removes the cgroups, killing anything left in them.
class TwoHosts {
 public:
  TwoHosts(const std::string& cgroup2_root, const std::string& tag);
  ~TwoHosts();
  TwoHosts(const TwoHosts&) = delete;
  TwoHosts& operator=(const TwoHosts&) = delete;

  // `sysctl -w key=value` inside the host's netns.
  void sysctl(const Host& h, const std::string& key, const std::string& value);

  Host a, b;

 private:
  void teardown() noexcept;
};

// A forked process that joined `host`'s cgroup and netns and runs `body`.
// The body talks to the parent through two pipes: it writes lines with
// Channel::send and reads the parent's with Channel::recv.
class Channel {
 public:
  Channel(int rfd, int wfd) : rfd_(rfd), wfd_(wfd) {}
  void send(const std::string& line) const;
  // Empty string on EOF or timeout.
  std::string recv(std::chrono::milliseconds timeout =
                       std::chrono::seconds(20)) const;

 private:
  int rfd_, wfd_;
};

class Child {
 public:
  Child(const Host& host, std::function<int(Channel&)> body);
  ~Child();  // kills and reaps if still running
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  Channel& channel() { return *chan_; }
  // Exit code of the body (-1 on timeout, after SIGKILL; 128+sig if killed).
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  bool reaped_ = false;
  std::unique_ptr<Channel> chan_;
  int fds_[2] = {-1, -1};
};

// ---- sockets (used inside Child bodies)
// Listening TCP socket on addr (v4, v6 or "::" dual-stack), port 0 = any.
int tcp_listen(const std::string& addr, std::uint16_t port = 0,
               bool fastopen = false);
int tcp_connect(const std::string& addr, std::uint16_t port);
std::uint16_t local_port(int fd);
bool send_all(int fd, const void* buf, std::size_t n);
bool recv_exact(int fd, void* buf, std::size_t n);
// Echoes every byte until EOF; returns bytes echoed.
std::uint64_t echo_until_eof(int fd);


// ------------------------------------------------------------- TwoHosts

inline TwoHosts::TwoHosts(const std::string& cgroup2_root, const std::string& tag) {
  static std::atomic<int> counter{0};
  int n = counter++;
  std::string shortid = std::to_string(getpid() % 100000) + "x" +
                        std::to_string(n % 100);
  // Scratch names ("bpfmgr-test-<pid>-<n>-..."): what a killed run leaves
  // is swept by the next one, like PinRoot's, ScopedCgroup's and NetNs's.
  // The veths live inside the namespaces and go with them.
  detail::sweep_stale_netns();
  detail::sweep_stale_cgroups();
  std::string id = unique_name(kScratchPrefix) + "-" + tag;
  a.netns = id + "-a";
  b.netns = id + "-b";
  a.cgroup = cgroup2_root + "/" + id + "-a";
  b.cgroup = cgroup2_root + "/" + id + "-b";
  a.ifname = "ti" + shortid + "a";
  b.ifname = "ti" + shortid + "b";
  a.addr4 = "10.201.0.1";
  b.addr4 = "10.201.0.2";
  a.addr6 = "fd00:201::1";
  b.addr6 = "fd00:201::2";
  try {
    auto run = [](const std::vector<std::string>& argv) {
      auto r = exec(argv);
      if (r.exit_code != 0) {
        std::string cmd;
        for (const auto& s : argv) cmd += s + " ";
        throw std::runtime_error("'" + cmd + "' failed: " + r.out);
      }
    };
    run({"ip", "netns", "add", a.netns});
    run({"ip", "netns", "add", b.netns});
    run({"ip", "link", "add", a.ifname, "netns", a.netns, "type", "veth",
         "peer", "name", b.ifname, "netns", b.netns});
    for (const Host* h : {&a, &b}) {
      run({"ip", "-n", h->netns, "addr", "add", h->addr4 + "/24", "dev",
           h->ifname});
      run({"ip", "-n", h->netns, "addr", "add", h->addr6 + "/64", "dev",
           h->ifname, "nodad"});
      run({"ip", "-n", h->netns, "link", "set", h->ifname, "up"});
      run({"ip", "-n", h->netns, "link", "set", "lo", "up"});
      if (::mkdir(h->cgroup.c_str(), 0755) && errno != EEXIST)
        throw detail::sys_error("mkdir " + h->cgroup);
    }
  } catch (...) {
    teardown();
    throw;
  }
}

inline TwoHosts::~TwoHosts() { teardown(); }

inline void TwoHosts::teardown() noexcept {
  for (const Host* h : {&a, &b}) {
    // Anything left behind in the cgroup dies with it.
    for (int tries = 0; tries < 50; ++tries) {
      std::ifstream procs(h->cgroup + "/cgroup.procs");
      if (!procs) break;
      bool any = false;
      pid_t p;
      while (procs >> p) {
        any = true;
        ::kill(p, SIGKILL);
      }
      if (!any && (::rmdir(h->cgroup.c_str()) == 0 || errno == ENOENT)) break;
      if (!any && errno != EBUSY) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::rmdir(h->cgroup.c_str());
    exec({"ip", "netns", "del", h->netns});
  }
}

inline void TwoHosts::sysctl(const Host& h, const std::string& key,
                      const std::string& value) {
  auto r = exec({"ip", "netns", "exec", h.netns, "sysctl", "-q", "-w",
                 key + "=" + value});
  if (r.exit_code != 0)
    throw std::runtime_error("sysctl " + key + " in " + h.netns + ": " + r.out);
}

// ---------------------------------------------------------- Child/Channel

inline void Channel::send(const std::string& line) const {
  std::string l = line + "\n";
  if (::write(wfd_, l.data(), l.size()) != static_cast<ssize_t>(l.size()))
    throw detail::sys_error("channel write");
}

inline std::string Channel::recv(std::chrono::milliseconds timeout) const {
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {};
    pollfd pfd{rfd_, POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return {};
    char c;
    ssize_t n = ::read(rfd_, &c, 1);
    if (n <= 0) return {};
    if (c == '\n') return line;
    line.push_back(c);
  }
}

inline Child::Child(const Host& host, std::function<int(Channel&)> body) {
  int up[2], down[2];  // up: child -> parent, down: parent -> child
  if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC)) throw detail::sys_error("pipe");
  std::string procs = host.cgroup + "/cgroup.procs";
  std::string ns = "/run/netns/" + host.netns;
  pid_ = fork();
  if (pid_ < 0) throw detail::sys_error("fork");
  if (pid_ == 0) {
    ::close(up[0]);
    ::close(down[1]);
    Channel ch(down[0], up[1]);
    int rc = 100;
    try {
      detail::write_file(procs, std::to_string(getpid()));
      int nsfd = ::open(ns.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || setns(nsfd, CLONE_NEWNET)) throw detail::sys_error("setns " + ns);
      ::close(nsfd);
      rc = body(ch);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lab child: %s\n", e.what());
      rc = 101;
    }
    std::fflush(nullptr);
    _exit(rc);
  }
  ::close(up[1]);
  ::close(down[0]);
  fds_[0] = up[0];
  fds_[1] = down[1];
  chan_ = std::make_unique<Channel>(up[0], down[1]);
}

inline int Child::wait(std::chrono::milliseconds timeout) {
  if (reaped_) return status_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &st, 0);
      reaped_ = true;
      status_ = -1;
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  reaped_ = true;
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return status_;
}

inline Child::~Child() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
  }
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

// --------------------------------------------------------------- sockets

namespace detail {
inline bool to_sockaddr(const std::string& addr, std::uint16_t port,
                        sockaddr_storage& ss, socklen_t& len) {
  std::memset(&ss, 0, sizeof(ss));
  auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, addr.c_str(), &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    len = sizeof(*s4);
    return true;
  }
  if (inet_pton(AF_INET6, addr.c_str(), &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    len = sizeof(*s6);
    return true;
  }
  return false;
}

// A TCP socket of addr's family; `ss`/`len` get addr:port.
inline int tcp_socket_for(const std::string& addr, std::uint16_t port, sockaddr_storage& ss,
                          socklen_t& len) {
  if (!to_sockaddr(addr, port, ss, len)) throw std::runtime_error("bad address " + addr);
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sys_error("socket");
  return fd;
}
}  // namespace detail

inline int tcp_listen(const std::string& addr, std::uint16_t port, bool fastopen) {
  sockaddr_storage ss;
  socklen_t len;
  int fd = detail::tcp_socket_for(addr, port, ss, len);
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ss.ss_family == AF_INET6)  // "::" is dual-stack (v4-mapped peers)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (fastopen) {
    int qlen = 16;
    setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof(qlen));
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) ||
      ::listen(fd, 64)) {
    int e = errno;
    ::close(fd);
    errno = e;
    throw detail::sys_error("bind/listen " + addr);
  }
  return fd;
}

inline int tcp_connect(const std::string& addr, std::uint16_t port) {
  sockaddr_storage ss;
  socklen_t len;
  int fd = detail::tcp_socket_for(addr, port, ss, len);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len)) {
    int e = errno;
    ::close(fd);
    errno = e;
    throw detail::sys_error("connect " + addr + ":" + std::to_string(port));
  }
  return fd;
}

inline std::uint16_t local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET)
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

inline bool send_all(int fd, const void* buf, std::size_t n) {
  const char* p = static_cast<const char*>(buf);
  while (n) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

inline bool recv_exact(int fd, void* buf, std::size_t n) {
  char* p = static_cast<char*>(buf);
  while (n) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

inline std::uint64_t echo_until_eof(int fd) {
  char buf[65536];
  std::uint64_t total = 0;
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (!send_all(fd, buf, static_cast<std::size_t>(r))) break;
    total += static_cast<std::uint64_t>(r);
  }
  return total;
}

}  // namespace bpfmgr::bench
