#include "two_hosts.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace bpfmgr::test::lab {

namespace {

std::runtime_error sys_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

void write_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw sys_error("open " + path);
  ssize_t n = ::write(fd, text.data(), text.size());
  int e = errno;
  ::close(fd);
  errno = e;
  if (n != static_cast<ssize_t>(text.size())) throw sys_error("write " + path);
}


}  // namespace

ExecResult exec(const std::vector<std::string>& argv) {
  ExecResult r;
  int p[2];
  if (pipe2(p, O_CLOEXEC)) throw sys_error("pipe");
  pid_t pid = fork();
  if (pid < 0) throw sys_error("fork");
  if (pid == 0) {
    dup2(p[1], 1);
    dup2(p[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  ::close(p[1]);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof(buf))) > 0) r.out.append(buf, n);
  ::close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// ------------------------------------------------------------- TwoHosts

TwoHosts::TwoHosts(const std::string& cgroup2_root, const std::string& tag) {
  static std::atomic<int> counter{0};
  int n = counter++;
  std::string id = std::to_string(getpid()) + "-" + std::to_string(n);
  std::string shortid = std::to_string(getpid() % 100000) + "x" +
                        std::to_string(n % 100);
  a.netns = "tcpint-" + tag + "-" + id + "-a";
  b.netns = "tcpint-" + tag + "-" + id + "-b";
  a.cgroup = cgroup2_root + "/tcpint-" + tag + "-" + id + "-a";
  b.cgroup = cgroup2_root + "/tcpint-" + tag + "-" + id + "-b";
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
        throw sys_error("mkdir " + h->cgroup);
    }
  } catch (...) {
    teardown();
    throw;
  }
}

TwoHosts::~TwoHosts() { teardown(); }

void TwoHosts::teardown() noexcept {
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

void TwoHosts::sysctl(const Host& h, const std::string& key,
                      const std::string& value) {
  auto r = exec({"ip", "netns", "exec", h.netns, "sysctl", "-q", "-w",
                 key + "=" + value});
  if (r.exit_code != 0)
    throw std::runtime_error("sysctl " + key + " in " + h.netns + ": " + r.out);
}

// ---------------------------------------------------------- Child/Channel

void Channel::send(const std::string& line) const {
  std::string l = line + "\n";
  if (::write(wfd_, l.data(), l.size()) != static_cast<ssize_t>(l.size()))
    throw sys_error("channel write");
}

std::string Channel::recv(std::chrono::milliseconds timeout) const {
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

Child::Child(const Host& host, std::function<int(Channel&)> body) {
  int up[2], down[2];  // up: child -> parent, down: parent -> child
  if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC)) throw sys_error("pipe");
  std::string procs = host.cgroup + "/cgroup.procs";
  std::string ns = "/run/netns/" + host.netns;
  pid_ = fork();
  if (pid_ < 0) throw sys_error("fork");
  if (pid_ == 0) {
    ::close(up[0]);
    ::close(down[1]);
    Channel ch(down[0], up[1]);
    int rc = 100;
    try {
      write_file(procs, std::to_string(getpid()));
      int nsfd = ::open(ns.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || setns(nsfd, CLONE_NEWNET)) throw sys_error("setns " + ns);
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

int Child::wait(std::chrono::milliseconds timeout) {
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

Child::~Child() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
  }
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

// --------------------------------------------------------------- sockets

namespace {
bool to_sockaddr(const std::string& addr, std::uint16_t port,
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
}  // namespace

int tcp_listen(const std::string& addr, std::uint16_t port, bool fastopen) {
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(addr, port, ss, len))
    throw std::runtime_error("bad address " + addr);
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sys_error("socket");
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
    throw sys_error("bind/listen " + addr);
  }
  return fd;
}

int tcp_connect(const std::string& addr, std::uint16_t port) {
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(addr, port, ss, len))
    throw std::runtime_error("bad address " + addr);
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sys_error("socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len)) {
    int e = errno;
    ::close(fd);
    errno = e;
    throw sys_error("connect " + addr + ":" + std::to_string(port));
  }
  return fd;
}

std::uint16_t local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET)
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

bool send_all(int fd, const void* buf, std::size_t n) {
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

bool recv_exact(int fd, void* buf, std::size_t n) {
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

std::uint64_t echo_until_eof(int fd) {
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

}  // namespace bpfmgr::test::lab
