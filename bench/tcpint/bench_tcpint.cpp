// bench_tcpint [--rounds N] [--rr-iters N] [--rr-size B] [--bulk-ms MS]
//              [--micro-iters N] [--pin-cpu CPU] [--bpf-stats 0|1]
// tcpint's side-by-side benchmark: two netns joined by a veth (each with a
// cgroup, tests/support's lab), request/response latency, bulk throughput and
// syscall costs with the plugin off, sock_ops only and with the syscall
// hook, interleaved round by round. The plugin is loaded with the real
// `bpfmgr load` under a private pin root. Needs root. Results:
// docs/tcpint.md.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <bpfmgr/bench.hpp>

namespace {

namespace bench = bpfmgr::bench;
using namespace bpfmgr::bench;

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

struct BenchConfig {
  int rounds = 5;
  int rr_iters = 20000;
  std::size_t rr_size = 64;
  int bulk_ms = 1000;
  std::size_t bulk_chunk = 128 * 1024;
  int micro_iters = 200000;
  int pin_cpu = -1;  // >= 0: client and servers pinned to this CPU
  bool bpf_stats = false;  // kernel run-time accounting per program
};

struct Sample {
  double rr_mean_us = 0, rr_p50_us = 0, rr_p99_us = 0;
  double bulk_gbps = 0;
  double getppid_ns = 0, devnull_write_ns = 0;
  // per round trip, with --bpf-stats
  double sockops_runs = 0, sockops_ns = 0, sys_runs = 0, sys_ns = 0;
};

// Modes measured side by side: plugin off, sock_ops only (no syscall hook),
// full (sock_ops + syscall hook), each of the last two also with
// `data_changed` instead of `data` (data segments carry the option only
// when the context changed), and full with `fallbacks = "always"` (the
// forms Linux 6.1 runs: probe-read syscall hook and connect-time task).
enum class Mode { Off, SockOps, Full, SockOpsChanged, FullChanged, FullFallbacks };
constexpr int kModes = 6;
const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Off: return "off";
    case Mode::SockOps: return "sockops";
    case Mode::Full: return "full";
    case Mode::SockOpsChanged: return "sockops-chg";
    case Mode::FullChanged: return "full-chg";
    case Mode::FullFallbacks: return "full-fb";
  }
  return "?";
}

std::string manifest_for(const TwoHosts& h, Mode m) {
  std::ostringstream o;
  const bool hooks = m == Mode::Full || m == Mode::FullChanged || m == Mode::FullFallbacks;
  const bool changed = m == Mode::SockOpsChanged || m == Mode::FullChanged;
  int sid = 1;
  for (const Host* host : {&h.a, &h.b}) {
    o << "[[instance]]\nname = \"tcpint_" << (sid == 1 ? "a" : "b")
      << "\"\nplugin = \"tcpint\"\n[instance.options]\ncgroup = \""
      << host->cgroup << "\"\nsender_id = " << sid
      << "\nsyscall_hooks = " << (hooks ? "true" : "false") << "\n";
    if (changed)
      o << "segments = [\"syn\", \"ack\", \"data_changed\", \"fin\"]\n";
    if (m == Mode::FullFallbacks) o << "fallbacks = \"always\"\n";
    o << "\n";
    ++sid;
  }
  return o.str();
}

// One measurement round in a child of host A against servers in host B.
// BPF run time of tcpint's programs in both instances (bpf_stats), summed.
struct ProgTotals {
  bench::ProgRunTime sockops, sys_enter;
};
ProgTotals prog_totals(const bench::LoadedManifest* m) {
  ProgTotals t;
  if (!m) return t;
  for (const char* inst : {"tcpint_a", "tcpint_b"}) {
    auto so = bench::prog_run_time(m->prog_pin(inst, "tcpint_sockops"));
    t.sockops.run_cnt += so.run_cnt;
    t.sockops.run_time_ns += so.run_time_ns;
    // whichever syscall-hook variant this kernel runs (the other has no pin)
    for (const char* prog : {"tcpint_sys_enter", "tcpint_sys_enter_probe"}) {
      auto se = bench::prog_run_time(m->prog_pin(inst, prog));
      t.sys_enter.run_cnt += se.run_cnt;
      t.sys_enter.run_time_ns += se.run_time_ns;
    }
  }
  return t;
}

Sample measure(const TwoHosts& h, std::uint16_t echo_port,
               std::uint16_t sink_port, const BenchConfig& cfg,
               const bench::LoadedManifest* loaded) {
  Child c(h.a, [&](Channel& ch) {
    bench::pin_to_cpu(cfg.pin_cpu);
    Sample s;
    ProgTotals p0 = prog_totals(loaded);
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
      // Per round trip (both ends, warm-up included in the counts): runs
      // and ns of each program.
      ProgTotals p1 = prog_totals(loaded);
      double n = cfg.rr_iters + 200;
      s.sockops_runs = double(p1.sockops.run_cnt - p0.sockops.run_cnt) / n;
      s.sockops_ns = double(p1.sockops.run_time_ns - p0.sockops.run_time_ns) / n;
      s.sys_runs = double(p1.sys_enter.run_cnt - p0.sys_enter.run_cnt) / n;
      s.sys_ns = double(p1.sys_enter.run_time_ns - p0.sys_enter.run_time_ns) / n;
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
    std::snprintf(line, sizeof(line), "%f %f %f %f %f %f %f %f %f %f", s.rr_mean_us,
                  s.rr_p50_us, s.rr_p99_us, s.bulk_gbps, s.getppid_ns,
                  s.devnull_write_ns, s.sockops_runs, s.sockops_ns, s.sys_runs,
                  s.sys_ns);
    ch.send(line);
    return 0;
  });
  std::string line = c.channel().recv(std::chrono::seconds(120));
  int rc = c.wait(std::chrono::seconds(10));
  Sample s;
  if (rc != 0 ||
      std::sscanf(line.c_str(), "%lf %lf %lf %lf %lf %lf %lf %lf %lf %lf", &s.rr_mean_us,
                  &s.rr_p50_us, &s.rr_p99_us, &s.bulk_gbps, &s.getppid_ns,
                  &s.devnull_write_ns, &s.sockops_runs, &s.sockops_ns, &s.sys_runs,
                  &s.sys_ns) != 10)
    throw std::runtime_error("bench client failed (exit " +
                             std::to_string(rc) + ")");
  return s;
}

int run_harness(const std::vector<std::string>& args) {
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
    else if (k == "--bpf-stats") cfg.bpf_stats = v != 0;
    else {
      std::cerr << "usage: bench_tcpint [--rounds N] [--rr-iters N] "
                   "[--rr-size BYTES] [--bulk-ms MS] [--micro-iters N] "
                   "[--pin-cpu CPU] [--bpf-stats 0|1]\n";
      return 2;
    }
  }
  if (args.size() % 2) {
    std::cerr << "bench_tcpint: options come in pairs\n";
    return 2;
  }

  // Run-time accounting adds two clock reads to every program run, so it
  // is off unless asked for: the overhead figures are measured without it.
  std::unique_ptr<bench::BpfStats> stats;
  if (cfg.bpf_stats) stats = std::make_unique<bench::BpfStats>();
  TwoHosts hosts(bench::cgroup2_root(), "bench");
  // Servers in host B live for the whole run: connections made while the
  // plugin is loaded get its callbacks whatever the listener's age.
  auto server = [&](bool echo) {
    return std::make_unique<Child>(hosts.b, [echo, &cfg](Channel& ch) -> int {
      bench::pin_to_cpu(cfg.pin_cpu);
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

  const Mode modes[kModes] = {Mode::Off,           Mode::SockOps,     Mode::Full,
                              Mode::SockOpsChanged, Mode::FullChanged, Mode::FullFallbacks};
  std::vector<Sample> samples[kModes];
  std::cout << "tcpint bench: " << cfg.rounds << " rounds, modes interleaved "
            << "(off / sockops / full / sockops-chg / full-chg / full-fb), RR "
            << cfg.rr_iters << " x " << cfg.rr_size << " B, bulk "
            << cfg.bulk_ms << " ms x " << cfg.bulk_chunk / 1024
            << " KiB writes, veth between two netns" << std::endl;
  for (int r = 0; r < cfg.rounds; ++r) {
    for (int k = 0; k < kModes; ++k) {
      // alternate the order every other round
      int idx = (r % 2 == 0) ? k : kModes - 1 - k;
      Mode m = modes[idx];
      std::unique_ptr<bench::LoadedManifest> guard;
      if (m != Mode::Off)
        guard = std::make_unique<bench::LoadedManifest>(manifest_for(hosts, m));
      samples[idx].push_back(measure(hosts, echo_port, sink_port, cfg, guard.get()));
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
  // bpf_stats: what the programs themselves cost per 64 B round trip
  // (client + server, both directions), medians over rounds.
  if (cfg.bpf_stats) {
  std::printf("\nBPF run time per round trip (kernel bpf_stats, medians; both ends)\n");
  std::printf("%-13s %14s %14s %14s %14s %14s\n", "mode", "sockops runs", "sockops ns",
              "ns/sockops run", "sys_enter runs", "sys_enter ns");
  for (int i = 1; i < kModes; ++i) {
    double runs = med(i, &Sample::sockops_runs), ns = med(i, &Sample::sockops_ns);
    std::printf("%-13s %14.2f %14.1f %14.1f %14.2f %14.1f\n", mode_name(modes[i]), runs, ns,
                runs > 0 ? ns / runs : 0.0, med(i, &Sample::sys_runs), med(i, &Sample::sys_ns));
  }
  }
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

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_harness(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::cerr << "bench_tcpint: " << e.what() << "\n";
    return 1;
  }
}
