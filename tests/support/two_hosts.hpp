// Two "hosts" on one machine (each a network namespace + a
// cgroup v2 child, joined by a veth pair), processes placed in them, and the
// workloads the tests and the benchmark run between them.
//
// bpffs and cgroups are not per-netns, so a "host" is a cgroup whose
// processes live in a netns: a Child joins both before running its body.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace bpfmgr::test::lab {

struct ExecResult {
  int exit_code = -1;
  std::string out;  // stdout + stderr
};
// Runs argv (no shell), capturing output.
ExecResult exec(const std::vector<std::string>& argv);

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

}  // namespace bpfmgr::test::lab
