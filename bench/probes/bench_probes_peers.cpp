// bench_probes_peers: the probes plugin against the tools people run
// instead (libbpf-tools tcplife and syscount), with the reader a user would
// run attached, side by side in one process, rounds interleaved.
//
//   bench_probes_peers [churn] [delivery] [syscalls]   (default: all three)
//       [--rounds N] [--conns N] [--seconds S] [--burst N] [--ring-kb KB]
//
//  churn     N-connection loopback churn (connect, 100 B request, 200 B
//            reply, close): unobserved, probes + `bpfmgr events` (table and
//            JSON, to a file), tcplife + its own output (to a file).
//  delivery  records/s from one producer CPU (pinned) to a consumer on the
//            other CPU: a raw consumer (libbpf ring_buffer, in this process)
//            and `bpfmgr events --json` to a file; offered rate stepped up
//            until records drop; drops come from the plugin's counter.
//  syscalls  CPU per message of a 64 B loopback TCP stream: unobserved,
//            probes' syscall tracer, syscount -L.
//
// Needs root, tcplife and syscount (Debian: libbpf-tools). Every ratio is
// the median over rounds of (config / unobserved of the same round).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bpfmgr/bench.hpp>
#include "probes.h"
#include "probes_workload.hpp"

extern char** environ;

namespace {

namespace bs = bpfmgr::bench;
namespace w = bpfmgr::probes::workload;
using w::Fd;
using w::now_ns;

struct Args {
  int rounds = 5;
  int conns = 5000;
  double seconds = 1.0;
  int burst = 16;
  int ring_kb = 16384;  // delivery: room for ~110 ms at 1M records/s
};

// ------------------------------------------------------------ processes

// A child process with stdout to `out_path` (stderr to /dev/null), killed
// with SIGINT on stop() or destruction.
class Proc {
 public:
  Proc(const std::vector<std::string>& argv, const std::string& out_path) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    int rc = posix_spawnp(&pid_, a[0], &fa, nullptr, a.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  }
  ~Proc() { stop(); }
  // SIGINT, then waits; returns the exit status (128+sig if killed).
  int stop() {
    if (pid_ <= 0) return status_;
    ::kill(pid_, SIGINT);
    int st = 0;
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return status_ = 137;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

std::string temp_path(const std::string& tag) {
  return "/tmp/bench-probes-peers-" + std::to_string(::getpid()) + "-" + tag + ".out";
}

std::uint64_t count_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::uint64_t n = 0;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    n += std::uint64_t(std::count(buf, buf + in.gcount(), '\n'));
    if (!in) break;
  }
  return n;
}

bool have_tool(const std::string& name) {
  return bs::run({"sh", "-c", "command -v " + name}).exit_code == 0;
}

void set_cpu(int cpu) { bs::pin_to_cpu(cpu); }
void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < CPU_SETSIZE && i < 1024; ++i) CPU_SET(i, &set);
  sched_setaffinity(0, sizeof set, &set);
}

// --------------------------------------------------------------- probes

std::string probes_manifest(const std::string& options) {
  return "[[instance]]\nname = \"bench\"\nplugin = \"probes\"\n[instance.options]\n" +
         options;
}

// The test-only producer (bench/probes/probes_bench.bpf.c): probes records
// through the plugin's ring code, `burst` per write() of this process.
std::string producer_manifest(const std::string& options) {
  return "[[instance]]\nname = \"bench\"\nplugin = \"probes_bench\"\n[instance.options]\n" +
         options;
}

std::uint64_t counter_sum(const std::string& pin, __u64 probes_counters::*f) {
  int fd = bpf_obj_get(pin.c_str());
  if (fd < 0) return 0;
  std::vector<probes_counters> v(std::max(1, libbpf_num_possible_cpus()));
  std::uint32_t zero = 0;
  std::uint64_t s = 0;
  if (!bpf_map_lookup_elem(fd, &zero, v.data()))
    for (auto& c : v) s += c.*f;
  ::close(fd);
  return s;
}

// ---------------------------------------------------------------- churn

// `n` loopback connections, one at a time: connect, accept, 100 B request,
// 200 B reply, server closes, client closes. Returns connections/s.
double churn(int n) {
  Fd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (::bind(l.fd, reinterpret_cast<sockaddr*>(&a), al) || ::listen(l.fd, 128) ||
      ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &al))
    throw std::runtime_error("listen");
  char req[100], rep[200];
  std::memset(req, 'q', sizeof req);
  std::memset(rep, 'r', sizeof rep);
  auto t0 = now_ns();
  for (int i = 0; i < n; ++i) {
    Fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(c.fd, reinterpret_cast<sockaddr*>(&a), al)) throw std::runtime_error("connect");
    Fd s(::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (s.fd < 0) throw std::runtime_error("accept");
    if (::write(c.fd, req, sizeof req) != sizeof req ||
        !bs::recv_exact(s.fd, req, sizeof req) ||
        ::write(s.fd, rep, sizeof rep) != sizeof rep ||
        !bs::recv_exact(c.fd, rep, sizeof rep))
      throw std::runtime_error("request/reply");
    // Server closes first: TIME_WAIT stays on the fixed server port, the
    // client's ephemeral ports never run out.
    s.reset();
    c.reset();
  }
  return double(n) / (double(now_ns() - t0) / 1e9);
}

struct ChurnConfig {
  std::string name;
  std::string probes_options;  // empty: no probes
  std::vector<std::string> reader;  // "events" args, or a tool's argv
  bool tool = false;                // reader is a peer tool (tcplife)
  int events_per_conn = 0;          // records expected per connection
};

struct ChurnResult {
  std::vector<double> rate;
  std::uint64_t lines = 0, expected = 0, dropped = 0;
};

void run_churn(const Args& args) {
  const std::string conn3 = "kinds = [\"connect\", \"accept\", \"close\"]\n";
  const std::string close1 = "kinds = [\"close\"]\n";
  std::vector<ChurnConfig> cfgs = {
      {"unobserved", "", {}, false, 0},
      {"probes close, events table", close1, {}, false, 2},
      {"probes close, events --json", close1, {"--json"}, false, 2},
      {"probes connect+accept+close, --json", conn3, {"--json"}, false, 4},
      {"probes close, --json, wakeup per record", close1 + "ring_buffer_wakeup_kb = 0\n",
       {"--json"}, false, 2},
  };
  if (have_tool("tcplife"))
    cfgs.push_back({"tcplife (libbpf-tools)", "", {"tcplife"}, true, 2});
  else
    std::printf("tcplife not found (apt-get install libbpf-tools): its row is skipped\n");
  std::map<std::string, ChurnResult> res;
  churn(500);  // warm-up
  for (int r = 0; r < args.rounds; ++r) {
    for (std::size_t k = 0; k < cfgs.size(); ++k) {
      // rotate the order every round: no config always runs first
      const auto& c = cfgs[(k + std::size_t(r)) % cfgs.size()];
      auto& out = res[c.name];
      std::unique_ptr<bs::LoadedManifest> loaded;
      std::unique_ptr<Proc> reader;
      std::string file = temp_path("churn");
      std::uint64_t d0 = 0;
      if (!c.probes_options.empty()) {
        loaded = std::make_unique<bs::LoadedManifest>(probes_manifest(c.probes_options));
        std::vector<std::string> argv = {bs::bpfmgr_binary(), "events", "bench",
                                         "--pin-root", loaded->pin_root()};
        argv.insert(argv.end(), c.reader.begin(), c.reader.end());
        reader = std::make_unique<Proc>(argv, file);
        d0 = counter_sum(loaded->map_pin("bench", "counters"),
                         &probes_counters::events_dropped);
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      } else if (c.tool) {
        reader = std::make_unique<Proc>(c.reader, file);
        std::this_thread::sleep_for(std::chrono::seconds(2));  // load + attach
      }
      out.rate.push_back(churn(args.conns));
      if (reader) {
        std::this_thread::sleep_for(std::chrono::milliseconds(700));  // drain
        reader->stop();
        std::uint64_t lines = count_lines(file);
        bool header = c.tool || std::find(c.reader.begin(), c.reader.end(), "--json") ==
                                    c.reader.end();
        out.lines += lines - (header && lines ? 1 : 0);
        out.expected += std::uint64_t(args.conns) * std::uint64_t(c.events_per_conn);
        if (loaded)
          out.dropped += counter_sum(loaded->map_pin("bench", "counters"),
                                     &probes_counters::events_dropped) -
                         d0;
      }
      ::unlink(file.c_str());
      std::printf("  round %d  %-42s %9.0f conn/s\n", r + 1, c.name.c_str(),
                  out.rate.back());
      std::fflush(stdout);
    }
  }
  auto& base = res["unobserved"].rate;
  std::printf("\nconnection churn, %d connections x %d rounds (100 B request, 200 B reply)\n",
              args.conns, args.rounds);
  std::printf("%-42s %10s %8s %12s %10s %8s\n", "config", "median/s", "x unobs",
              "records", "expected", "dropped");
  for (auto& c : cfgs) {
    auto& r = res[c.name];
    std::printf("%-42s %10.0f %8.3f %12llu %10llu %8llu\n", c.name.c_str(),
                bs::median(r.rate), bs::paired_ratio(r.rate, base),
                (unsigned long long)r.lines, (unsigned long long)r.expected,
                (unsigned long long)r.dropped);
  }
  std::printf("x unobs: median over rounds of rate / unobserved rate of the same round\n"
              "records: lines the reader wrote (tcplife: one per closed socket)\n\n");
  std::fflush(stdout);
}

// ------------------------------------------------------------- delivery

struct RawCount {
  std::uint64_t n = 0, bytes = 0;
};
int raw_cb(void* ctx, void*, size_t size) {
  auto* c = static_cast<RawCount*>(ctx);
  ++c->n;
  c->bytes += size;
  return 0;
}

// One step: `calls` traced write()s of 1 byte to /dev/null from CPU 0,
// paced to `rate` records/s (0: unpaced), each submitting `burst` records.
struct Step {
  double offered = 0, achieved = 0;
  std::uint64_t emitted = 0, dropped = 0, delivered = 0;
  double delivered_per_s = 0;
};

double produce(std::uint64_t records, int burst, double rate) {
  Fd f(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  char c = 0;
  std::uint64_t calls = records / std::uint64_t(burst);
  double call_rate = rate / burst;
  auto t0 = now_ns();
  for (std::uint64_t i = 0; i < calls; ++i) {
    if (::write(f.fd, &c, 1) != 1) throw std::runtime_error("write");
    if (call_rate > 0 && (i & 15) == 15) {
      auto due = t0 + std::uint64_t(double(i + 1) * 1e9 / call_rate);
      while (now_ns() < due) {
      }
    }
  }
  return double(calls * std::uint64_t(burst)) / (double(now_ns() - t0) / 1e9);
}

void run_delivery(const Args& args) {
  if (libbpf_num_possible_cpus() < 2) {
    std::printf("delivery: needs two CPUs\n");
    return;
  }
  const std::string opts = "mode = \"burst\"\nring_buffer_kb = " +
                           std::to_string(args.ring_kb) + "\nburst = " +
                           std::to_string(args.burst) + "\npid = " +
                           std::to_string(::getpid()) + "\n";
  const std::vector<double> rates = {200e3, 250e3, 300e3, 350e3, 400e3, 500e3,
                                     1e6,   1.5e6, 2e6,   3e6,   0};
  bs::BpfStats stats;  // run time of the producing program, per record
  for (std::string consumer : {"raw", "json-file"}) {
    std::printf("delivery to %s consumer (CPU 1), producer on CPU 0, %d records per "
                "traced write(), 152-byte records, %d KiB ring, %.1f s per step\n",
                consumer.c_str(), args.burst, args.ring_kb, args.seconds);
    std::printf("%12s %12s %12s %12s %10s %14s %10s\n", "offered/s", "achieved/s",
                "emitted", "delivered", "dropped", "delivered/s", "bpf ns/rec");
    double onset = 0, best_clean = 0;
    for (double rate : rates) {
      bs::LoadedManifest m(producer_manifest(opts), {BPFMGR_BENCH_PROBES_BENCH_DIR});
      std::string ctr = m.map_pin("bench", "counters");
      std::string file = temp_path("delivery");
      std::unique_ptr<Proc> reader;
      RawCount raw;
      std::atomic<bool> stop{false};
      std::thread raw_thread;
      Fd rb_fd;
      ring_buffer* rb = nullptr;
      if (consumer == "raw") {
        rb_fd = Fd(bpf_obj_get(m.map_pin("bench", "events").c_str()));
        rb = ring_buffer__new(rb_fd.fd, raw_cb, &raw, nullptr);
        if (!rb) throw std::runtime_error("ring_buffer__new");
        raw_thread = std::thread([&] {
          set_cpu(1);
          while (!stop.load(std::memory_order_relaxed))
            if (ring_buffer__poll(rb, 100) == 0) ring_buffer__consume(rb);
          ring_buffer__consume(rb);
        });
      } else {
        set_cpu(1);  // the child inherits the affinity
        reader = std::make_unique<Proc>(
            std::vector<std::string>{bs::bpfmgr_binary(), "events", "bench",
                                     "--pin-root", m.pin_root(), "--json"},
            file);
      }
      set_cpu(0);
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      auto p0 = bs::prog_run_time(m.prog_pin("bench", "bench_burst"));
      std::uint64_t e0 = counter_sum(ctr, &probes_counters::events_emitted);
      std::uint64_t d0 = counter_sum(ctr, &probes_counters::events_dropped);
      std::uint64_t target = rate > 0 ? std::uint64_t(rate * args.seconds)
                                      : std::uint64_t(3e6 * args.seconds);
      auto t0 = now_ns();
      Step s;
      s.offered = rate;
      s.achieved = produce(target, args.burst, rate);
      auto p1 = bs::prog_run_time(m.prog_pin("bench", "bench_burst"));
      std::uint64_t e1 = counter_sum(ctr, &probes_counters::events_emitted);
      std::uint64_t d1 = counter_sum(ctr, &probes_counters::events_dropped);
      s.emitted = e1 - e0;
      s.dropped = d1 - d0;
      // Let the consumer finish what was emitted; its rate counts the time
      // until the last record was read.
      std::uint64_t got = 0;
      for (int i = 0; i < 400; ++i) {
        got = consumer == "raw" ? raw.n : 0;
        if (consumer == "raw" && got >= s.emitted) break;
        if (consumer != "raw" && i >= 20) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      auto t1 = now_ns();
      if (consumer == "raw") {
        stop = true;
        raw_thread.join();
        ring_buffer__free(rb);
        s.delivered = raw.n;
      } else {
        reader->stop();
        s.delivered = count_lines(file);
        ::unlink(file.c_str());
      }
      unpin();
      s.delivered_per_s = double(s.delivered) / (double(t1 - t0) / 1e9);
      double ns_rec = s.emitted ? double(p1.run_time_ns - p0.run_time_ns) / double(s.emitted)
                                : 0.0;
      std::printf("%12s %12.0f %12llu %12llu %10llu %14.0f %10.1f\n",
                  rate > 0 ? std::to_string(std::uint64_t(rate)).c_str() : "unpaced",
                  s.achieved, (unsigned long long)s.emitted,
                  (unsigned long long)s.delivered, (unsigned long long)s.dropped,
                  s.delivered_per_s, ns_rec);
      std::fflush(stdout);
      if (s.dropped == 0 && s.delivered >= s.emitted)
        best_clean = std::max(best_clean, s.achieved);
      else if (onset == 0)
        onset = s.achieved;
    }
    std::printf("  sustained with zero drops: %.0f records/s; drops begin at: %s\n\n",
                best_clean,
                onset > 0 ? (std::to_string(std::uint64_t(onset)) + " records/s offered").c_str()
                          : "none seen up to the fastest step");
    std::fflush(stdout);
  }
}

// ------------------------------------------------------------- syscalls

// CPU time (this process, user + system) per 64 B message streamed over
// loopback TCP from one thread to another.
double stream_cpu_ns(std::uint64_t msgs) {
  Fd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (::bind(l.fd, reinterpret_cast<sockaddr*>(&a), al) || ::listen(l.fd, 1) ||
      ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &al))
    throw std::runtime_error("listen");
  Fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(c.fd, reinterpret_cast<sockaddr*>(&a), al)) throw std::runtime_error("connect");
  Fd s(::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC));
  int one = 1;
  ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto cpu = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
           double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
  };
  double c0 = cpu();
  std::thread sink([&] {
    char buf[64];
    std::uint64_t want = msgs * 64;
    while (want) {
      ssize_t r = ::read(s.fd, buf, std::min<std::uint64_t>(sizeof buf, want));
      if (r <= 0) break;
      want -= std::uint64_t(r);
    }
  });
  char msg[64];
  std::memset(msg, 'm', sizeof msg);
  for (std::uint64_t i = 0; i < msgs; ++i)
    if (::write(c.fd, msg, sizeof msg) != sizeof msg) throw std::runtime_error("write");
  sink.join();
  return (cpu() - c0) / double(msgs);
}

void run_syscalls(const Args& args) {
  struct Cfg {
    std::string name, probes_options;
    std::vector<std::string> tool;
  };
  std::vector<Cfg> cfgs = {
      {"unobserved", "", {}},
      {"probes syscalls (latency 1 in 16)", "kinds = [\"syscalls\"]\n", {}},
      {"probes syscalls (every call timed)",
       "kinds = [\"syscalls\"]\nlatency_sample_every = 1\n", {}},
  };
  if (have_tool("syscount")) {
    cfgs.push_back({"syscount", "", {"syscount"}});
    cfgs.push_back({"syscount -L (latency)", "", {"syscount", "-L"}});
  } else {
    std::printf("syscount not found (apt-get install libbpf-tools): its rows are skipped\n");
  }
  const std::uint64_t msgs = 200000;
  std::map<std::string, std::vector<double>> ns;
  for (int r = 0; r < args.rounds; ++r)
    for (std::size_t k = 0; k < cfgs.size(); ++k) {
      const auto& c = cfgs[(k + std::size_t(r)) % cfgs.size()];
      std::unique_ptr<bs::LoadedManifest> m;
      std::unique_ptr<Proc> tool;
      std::string file = temp_path("syscalls");
      if (!c.probes_options.empty())
        m = std::make_unique<bs::LoadedManifest>(probes_manifest(c.probes_options));
      if (!c.tool.empty()) {
        tool = std::make_unique<Proc>(c.tool, file);
        std::this_thread::sleep_for(std::chrono::seconds(2));
      }
      ns[c.name].push_back(stream_cpu_ns(msgs));
      tool.reset();
      ::unlink(file.c_str());
    }
  auto& base = ns["unobserved"];
  std::printf("64 B loopback TCP stream, %llu messages x %d rounds: CPU ns per message "
              "(writer + reader threads, user + system)\n",
              (unsigned long long)msgs, args.rounds);
  std::printf("%-38s %10s %10s\n", "config", "median ns", "x unobs");
  for (auto& c : cfgs)
    std::printf("%-38s %10.0f %10.3f\n", c.name.c_str(), bs::median(ns[c.name]),
                bs::paired_ratio(ns[c.name], base));
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  std::vector<std::string> what;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--rounds") args.rounds = std::stoi(next());
      else if (a == "--conns") args.conns = std::stoi(next());
      else if (a == "--seconds") args.seconds = std::stod(next());
      else if (a == "--burst") args.burst = std::stoi(next());
      else if (a == "--ring-kb") args.ring_kb = std::stoi(next());
      else if (a == "churn" || a == "delivery" || a == "syscalls") what.push_back(a);
      else if (a == "-h" || a == "--help") {
        std::printf("usage: bench_probes_peers [churn] [delivery] [syscalls] [--rounds N] "
                    "[--conns N] [--seconds S] [--burst N] [--ring-kb KB]\n");
        return 0;
      } else {
        std::fprintf(stderr, "bench_probes_peers: unknown argument %s (see --help)\n",
                     a.c_str());
        return 2;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_probes_peers: %s\n", e.what());
      return 2;
    }
  }
  if (what.empty()) what = {"churn", "delivery", "syscalls"};
  ::setenv("BPFMGR_LOG_LEVEL", "error", 1);
  try {
    for (auto& x : what) {
      if (x == "churn") run_churn(args);
      if (x == "delivery") run_delivery(args);
      if (x == "syscalls") run_syscalls(args);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_probes_peers: %s\n", e.what());
    return 1;
  }
  return 0;
}
