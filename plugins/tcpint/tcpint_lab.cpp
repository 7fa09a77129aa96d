#include "tcpint_lab.hpp"

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

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tcpint::lab {

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

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
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
      std::fprintf(stderr, "tcpint lab child: %s\n", e.what());
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

// -------------------------------------------------------------- benchmark

namespace {

struct BenchConfig {
  int rounds = 5;
  int rr_iters = 20000;
  std::size_t rr_size = 64;
  int bulk_ms = 1000;
  std::size_t bulk_chunk = 128 * 1024;
  int micro_iters = 200000;
  int pin_cpu = -1;  // >= 0: client and servers pinned to this CPU
};

// Pins the calling process to `cpu` (no-op when negative): with client and
// servers on one CPU the round trip no longer depends on where the
// scheduler puts them, which otherwise makes rounds bimodal here.
void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

struct Sample {
  double rr_mean_us = 0, rr_p50_us = 0, rr_p99_us = 0;
  double bulk_gbps = 0;
  double getppid_ns = 0, devnull_write_ns = 0;
};

// Modes measured side by side: plugin off, sock_ops only (no syscall hook),
// full (sock_ops + syscall hook), each of the last two also with
// `data_changed` instead of `data` (data segments carry the option only
// when the context changed).
enum class Mode { Off, SockOps, Full, SockOpsChanged, FullChanged };
constexpr int kModes = 5;
const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Off: return "off";
    case Mode::SockOps: return "sockops";
    case Mode::Full: return "full";
    case Mode::SockOpsChanged: return "sockops-chg";
    case Mode::FullChanged: return "full-chg";
  }
  return "?";
}

std::string manifest_for(const TwoHosts& h, Mode m) {
  std::ostringstream o;
  const bool hooks = m == Mode::Full || m == Mode::FullChanged;
  const bool changed = m == Mode::SockOpsChanged || m == Mode::FullChanged;
  int sid = 1;
  for (const Host* host : {&h.a, &h.b}) {
    o << "[[instance]]\nname = \"tcpint_" << (sid == 1 ? "a" : "b")
      << "\"\nplugin = \"tcpint\"\n[instance.options]\ncgroup = \""
      << host->cgroup << "\"\nsender_id = " << sid
      << "\nsyscall_hooks = " << (hooks ? "true" : "false") << "\n";
    if (changed)
      o << "segments = [\"syn\", \"ack\", \"data_changed\", \"fin\"]\n";
    o << "\n";
    ++sid;
  }
  return o.str();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t i = static_cast<std::size_t>(p * (v.size() - 1));
  return v[i];
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

// One measurement round in a child of host A against servers in host B.
Sample measure(const TwoHosts& h, std::uint16_t echo_port,
               std::uint16_t sink_port, const BenchConfig& cfg) {
  Child c(h.a, [&](Channel& ch) {
    pin_to(cfg.pin_cpu);
    Sample s;
    // Request/response: rr_size bytes each way, TCP_NODELAY.
    {
      int fd = tcp_connect(h.b.addr4, echo_port);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      std::vector<char> buf(cfg.rr_size, 'r');
      std::vector<double> lat;
      lat.reserve(static_cast<std::size_t>(cfg.rr_iters));
      for (int i = 0; i < cfg.rr_iters + 200; ++i) {
        auto t0 = now_ns();
        if (!send_all(fd, buf.data(), buf.size()) ||
            !recv_exact(fd, buf.data(), buf.size()))
          return 2;
        if (i >= 200) lat.push_back((now_ns() - t0) / 1000.0);  // warm-up
      }
      ::close(fd);
      double sum = 0;
      for (double v : lat) sum += v;
      s.rr_mean_us = sum / lat.size();
      s.rr_p50_us = percentile(lat, 0.5);
      s.rr_p99_us = percentile(lat, 0.99);
    }
    // Bulk: stream for bulk_ms, then half-close and wait for the sink's
    // EOF so that every byte was received.
    {
      int fd = tcp_connect(h.b.addr4, sink_port);
      std::vector<char> buf(cfg.bulk_chunk, 'b');
      std::uint64_t sent = 0;
      auto t0 = now_ns();
      auto until = t0 + static_cast<std::uint64_t>(cfg.bulk_ms) * 1000000ull;
      while (now_ns() < until) {
        if (!send_all(fd, buf.data(), buf.size())) return 3;
        sent += buf.size();
      }
      ::shutdown(fd, SHUT_WR);
      char c1;
      while (::read(fd, &c1, 1) > 0) {
      }
      auto t1 = now_ns();
      ::close(fd);
      s.bulk_gbps = sent * 8.0 / static_cast<double>(t1 - t0);
    }
    // Syscall costs seen by a process of the traced cgroup: one that the
    // raw tracepoint filters out by number, one it must resolve (fd walk)
    // and drop because the fd is not a socket.
    {
      auto t0 = now_ns();
      for (int i = 0; i < cfg.micro_iters; ++i) (void)getppid();
      s.getppid_ns = static_cast<double>(now_ns() - t0) / cfg.micro_iters;
      int nul = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      char b = 0;
      t0 = now_ns();
      for (int i = 0; i < cfg.micro_iters; ++i)
        if (::write(nul, &b, 1) != 1) return 4;
      s.devnull_write_ns =
          static_cast<double>(now_ns() - t0) / cfg.micro_iters;
      ::close(nul);
    }
    char line[256];
    std::snprintf(line, sizeof(line), "%f %f %f %f %f %f", s.rr_mean_us,
                  s.rr_p50_us, s.rr_p99_us, s.bulk_gbps, s.getppid_ns,
                  s.devnull_write_ns);
    ch.send(line);
    return 0;
  });
  std::string line = c.channel().recv(std::chrono::seconds(120));
  int rc = c.wait(std::chrono::seconds(10));
  Sample s;
  if (rc != 0 ||
      std::sscanf(line.c_str(), "%lf %lf %lf %lf %lf %lf", &s.rr_mean_us,
                  &s.rr_p50_us, &s.rr_p99_us, &s.bulk_gbps, &s.getppid_ns,
                  &s.devnull_write_ns) != 6)
    throw std::runtime_error("bench client failed (exit " +
                             std::to_string(rc) + ")");
  return s;
}

}  // namespace

int run_bench(const std::vector<std::string>& args, const LoadFn& load,
              const std::string& cgroup2_root) {
  BenchConfig cfg;
  for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
    const auto& k = args[i];
    int v = std::stoi(args[i + 1]);
    if (k == "--rounds") cfg.rounds = v;
    else if (k == "--rr-iters") cfg.rr_iters = v;
    else if (k == "--rr-size") cfg.rr_size = static_cast<std::size_t>(v);
    else if (k == "--bulk-ms") cfg.bulk_ms = v;
    else if (k == "--micro-iters") cfg.micro_iters = v;
    else if (k == "--pin-cpu") cfg.pin_cpu = v;
    else {
      std::cerr << "usage: bench tcpint [--rounds N] [--rr-iters N] "
                   "[--rr-size BYTES] [--bulk-ms MS] [--micro-iters N] "
                   "[--pin-cpu CPU]\n";
      return 2;
    }
  }
  if (args.size() % 2) {
    std::cerr << "bench tcpint: options come in pairs\n";
    return 2;
  }

  TwoHosts hosts(cgroup2_root, "bench");
  // Servers in host B live for the whole run: connections made while the
  // plugin is loaded get its callbacks whatever the listener's age.
  auto server = [&](bool echo) {
    return std::make_unique<Child>(hosts.b, [echo, &cfg](Channel& ch) -> int {
      pin_to(cfg.pin_cpu);
      int lfd = tcp_listen("0.0.0.0");
      ch.send(std::to_string(local_port(lfd)));
      for (;;) {
        int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (echo) {
          echo_until_eof(fd);
        } else {
          char buf[1 << 17];
          while (::read(fd, buf, sizeof(buf)) > 0) {
          }
        }
        ::close(fd);
      }
    });
  };
  auto echo = server(true);
  auto sink = server(false);
  auto echo_port = static_cast<std::uint16_t>(std::stoi(echo->channel().recv()));
  auto sink_port = static_cast<std::uint16_t>(std::stoi(sink->channel().recv()));

  const Mode modes[kModes] = {Mode::Off, Mode::SockOps, Mode::Full,
                              Mode::SockOpsChanged, Mode::FullChanged};
  std::vector<Sample> samples[kModes];
  std::cout << "tcpint bench: " << cfg.rounds << " rounds, modes interleaved "
            << "(off / sockops / full / sockops-chg / full-chg), RR "
            << cfg.rr_iters << " x " << cfg.rr_size << " B, bulk "
            << cfg.bulk_ms << " ms x " << cfg.bulk_chunk / 1024
            << " KiB writes, veth between two netns" << std::endl;
  for (int r = 0; r < cfg.rounds; ++r) {
    for (int k = 0; k < kModes; ++k) {
      // alternate the order every other round
      int idx = (r % 2 == 0) ? k : kModes - 1 - k;
      Mode m = modes[idx];
      std::unique_ptr<bpfmgr::LoadedInstances> guard;
      if (m != Mode::Off) guard = load(manifest_for(hosts, m));
      samples[idx].push_back(measure(hosts, echo_port, sink_port, cfg));
      guard.reset();
      const auto& s = samples[idx].back();
      std::printf("  round %d %-12s rr mean %7.2f us p50 %7.2f p99 %7.2f | "
                  "bulk %6.2f Gbit/s | getppid %6.1f ns write(/dev/null) "
                  "%6.1f ns\n",
                  r + 1, mode_name(m), s.rr_mean_us, s.rr_p50_us,
                  s.rr_p99_us, s.bulk_gbps, s.getppid_ns,
                  s.devnull_write_ns);
      std::fflush(stdout);
    }
  }
  auto med = [&](int i, double Sample::*f) {
    std::vector<double> v;
    for (const auto& s : samples[i]) v.push_back(s.*f);
    return median(v);
  };
  std::printf("\nmedian of %d rounds   %-9s", cfg.rounds, "off");
  for (int i = 1; i < kModes; ++i) std::printf(" %-17s", mode_name(modes[i]));
  std::printf("\n");
  struct Row {
    const char* name;
    double Sample::*f;
    bool higher_is_better;
  } rows[] = {{"rr mean (us)", &Sample::rr_mean_us, false},
              {"rr p50 (us)", &Sample::rr_p50_us, false},
              {"rr p99 (us)", &Sample::rr_p99_us, false},
              {"bulk (Gbit/s)", &Sample::bulk_gbps, true},
              {"getppid (ns)", &Sample::getppid_ns, false},
              {"write /dev/null (ns)", &Sample::devnull_write_ns, false}};
  for (const auto& row : rows) {
    double off = med(0, row.f);
    std::printf("%-21s %-9.2f", row.name, off);
    for (int i = 1; i < kModes; ++i) {
      double v = med(i, row.f);
      double d = row.higher_is_better ? (off - v) / off : (v - off) / off;
      std::printf(" %-8.2f(%+6.1f%%)", v, 100.0 * d);
    }
    std::printf("\n");
  }
  std::printf("(percentages: overhead against off; positive = worse)\n");
  std::printf("\nbest of %d rounds (least disturbed)\n", cfg.rounds);
  for (const auto& row : rows) {
    auto best = [&](int i) {
      double b = samples[i][0].*row.f;
      for (const auto& s : samples[i])
        b = row.higher_is_better ? std::max(b, s.*row.f)
                                 : std::min(b, s.*row.f);
      return b;
    };
    double off = best(0);
    std::printf("%-21s %-9.2f", row.name, off);
    for (int i = 1; i < kModes; ++i) {
      double v = best(i);
      double d = row.higher_is_better ? (off - v) / off : (v - off) / off;
      std::printf(" %-8.2f(%+6.1f%%)", v, 100.0 * d);
    }
    std::printf("\n");
  }
  // The machine drifts between rounds (other load): the paired figure is
  // the median over rounds of each mode's overhead against the off sample
  // of the same round.
  std::printf("\nmedian of per-round overhead against the same round's "
              "off\n");
  for (const auto& row : rows) {
    std::printf("%-21s %-9s", row.name, "");
    for (int i = 1; i < kModes; ++i) {
      std::vector<double> d;
      for (std::size_t r = 0; r < samples[0].size(); ++r) {
        double off = samples[0][r].*row.f, v = samples[i][r].*row.f;
        if (off > 0)
          d.push_back(100.0 * (row.higher_is_better ? (off - v) / off
                                                    : (v - off) / off));
      }
      std::printf(" %+8.1f%%         ", median(d));
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace tcpint::lab
