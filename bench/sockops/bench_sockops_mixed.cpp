// bench_sockops_mixed: the mixed workload of docs/sockops.md ("Auto"):
// a request/response service (64 B, 1 KiB, 16 KiB) and a bulk service
// (64 B, 4 KiB, 64 KiB writes, Nagle on and off) running at the same time,
// inside the bypass's cgroup vs the same services on plain loopback TCP,
// under both CPU placements (every thread on one CPU; clients on CPU 0 and
// servers on CPU 1). Request/response alone is also compared with an
// AF_UNIX socketpair. Interleaved per round in one run; medians and ratios.
// Needs root (loads BPF through the bpfmgr binary, creates a cgroup).
//
//   bench_sockops_mixed [--select all|auto] [--rounds N] [--ms M]
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bypass_workload.hpp"

namespace bp = bpfmgr::bypass;
using Clock = std::chrono::steady_clock;

namespace {

std::string g_cg_root = "/sys/fs/cgroup/unified", g_cg, g_pins;

void move_self(const std::string& cg) { std::ofstream(cg + "/cgroup.procs") << getpid() << "\n"; }
int sh(const std::string& cmd) { return std::system(cmd.c_str()); }

bool setup(const std::string& select) {
  std::string tag = std::to_string(getpid());
  g_cg = g_cg_root + "/bpfmgr-bench-mixed-" + tag;
  g_pins = "/sys/fs/bpf/bpfmgr-bench-mixed-" + tag;
  if (mkdir(g_cg.c_str(), 0755) != 0) return false;
  std::string m = "/tmp/bpfmgr-bench-mixed-" + tag + ".toml";
  std::ofstream(m) << "pin_root = \"" << g_pins << "\"\n[[instance]]\nname = \"ops\"\n"
                   << "plugin = \"sockops\"\n[instance.options]\ncgroup = \"" << g_cg
                   << "\"\nselect = \"" << select << "\"\n[[instance]]\nname = \"msg\"\n"
                   << "plugin = \"sockmsg\"\n[instance.maps]\nsock_hash = \"ops\"\n"
                   << "services = \"ops\"\nsock_state = \"ops\"\n";
  int rc = sh("BPFMGR_PLUGIN_PATH=" BPFMGR_BENCH_PLUGIN_DIR " " BPFMGR_BENCH_BINARY " load " + m +
              " >/dev/null");
  std::remove(m.c_str());
  return rc == 0;
}

void teardown() {
  sh(BPFMGR_BENCH_BINARY " unpin --pin-root " + g_pins + " >/dev/null 2>&1");
  rmdir(g_cg.c_str());
}

void pin_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

struct Placement {
  const char* name;
  int client_cpu, server_cpu;
};

// Round trips of `size` until stop; returns mean round trip in us.
double run_rr(bp::SocketPair& p, std::size_t size, const Placement& pl,
              std::atomic<bool>& stop) {
  std::thread echo([&] {
    pin_cpu(pl.server_cpu);
    std::vector<char> b(size);
    try {
      for (;;) {
        bp::read_all(p.b, b.data(), size);
        bp::write_all(p.b, b.data(), size);
      }
    } catch (...) {
    }
  });
  pin_cpu(pl.client_cpu);
  std::vector<char> b(size, 'r');
  std::uint64_t n = 0;
  auto t0 = Clock::now();
  while (!stop) {
    bp::write_all(p.a, b.data(), size);
    bp::read_all(p.a, b.data(), size);
    ++n;
  }
  auto t1 = Clock::now();
  ::shutdown(p.a, SHUT_WR);
  echo.join();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / std::max<std::uint64_t>(n, 1);
}

// One-way stream in `chunk` writes until stop; returns MB/s at the reader.
double run_bulk(bp::SocketPair& p, std::size_t chunk, const Placement& pl,
                std::atomic<bool>& stop) {
  std::uint64_t got = 0;
  Clock::time_point t_end;
  auto t0 = Clock::now();
  std::thread reader([&] {
    pin_cpu(pl.server_cpu);
    std::vector<char> b(256 << 10);
    for (;;) {
      ssize_t r = ::read(p.b, b.data(), b.size());
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) break;
      got += r;
    }
    t_end = Clock::now();
  });
  pin_cpu(pl.client_cpu);
  std::vector<char> b(chunk, 'b');
  while (!stop) bp::write_all(p.a, b.data(), chunk);
  ::shutdown(p.a, SHUT_WR);
  reader.join();
  return got / std::chrono::duration<double>(t_end - t0).count() / 1e6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Services {
  std::unique_ptr<bp::Listener> rr[3], bulk[6];
};
constexpr std::size_t kRrSize[3] = {64, 1024, 16384};
constexpr std::size_t kBulkSize[6] = {64, 4096, 65536, 64, 4096, 65536};
constexpr bool kBulkNagle[6] = {true, true, true, false, false, false};

bp::SocketPair connect(bool bypass, const bp::Listener& l, bool nodelay) {
  if (bypass) move_self(g_cg);
  auto p = l.connect(nodelay);
  if (bypass) move_self(g_cg_root);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::string select = "auto";
  int rounds = 3, ms = 500;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--select") select = next();
    else if (a == "--rounds") rounds = std::stoi(next());
    else if (a == "--ms") ms = std::stoi(next());
    else {
      std::cerr << "usage: bench_sockops_mixed [--select all|auto] [--rounds N] [--ms M]\n";
      return 2;
    }
  }
  if (!setup(select)) {
    std::cerr << "bench_sockops_mixed: setup failed (root? bpfmgr built?)\n";
    teardown();
    return 1;
  }
  int rc = 0;
  try {
    Services svc[2];  // [0] plain TCP (outside the cgroup), [1] bypass cgroup
    for (int k = 0; k < 2; ++k) {
      if (k == 1) move_self(g_cg);
      for (auto& l : svc[k].rr) l = std::make_unique<bp::Listener>();
      for (auto& l : svc[k].bulk) l = std::make_unique<bp::Listener>();
      if (k == 1) move_self(g_cg_root);
    }
    // Learning (auto): a few short connections of every service first.
    Placement split{"different CPUs", 0, 1};
    for (int w = 0; w < 3; ++w) {
      for (int i = 0; i < 3; ++i) {
        auto p = connect(true, *svc[1].rr[i], true);
        std::atomic<bool> stop{false};
        std::thread t([&] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); stop = true; });
        run_rr(p, kRrSize[i], split, stop);
        t.join();
      }
      for (int i = 0; i < 6; ++i) {
        auto p = connect(true, *svc[1].bulk[i], !kBulkNagle[i]);
        std::atomic<bool> stop{false};
        std::thread t([&] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); stop = true; });
        run_bulk(p, kBulkSize[i], split, stop);
        t.join();
      }
    }
    int ncpu = std::thread::hardware_concurrency();
    std::vector<Placement> placements{{"one CPU", ncpu > 1 ? 1 : 0, ncpu > 1 ? 1 : 0}};
    if (ncpu > 1) placements.push_back(split);
    std::cout << std::fixed << std::setprecision(2) << "select = " << select << ", " << rounds
              << " interleaved rounds of " << ms << " ms, medians\n";
    for (auto& pl : placements) {
      // [combo][kind] -> rr us, bulk MB/s
      std::map<int, std::vector<double>> rr[2], bulk[2], alone[3];
      for (int r = 0; r < rounds; ++r) {
        for (int j = 0; j < 6; ++j)
          for (int k = 0; k < 2; ++k) {
            auto prr = connect(k == 1, *svc[k].rr[j % 3], true);
            auto pbk = connect(k == 1, *svc[k].bulk[j], !kBulkNagle[j]);
            std::atomic<bool> stop{false};
            double rr_us = 0, mbs = 0;
            std::thread a([&] { rr_us = run_rr(prr, kRrSize[j % 3], pl, stop); });
            std::thread b([&] { mbs = run_bulk(pbk, kBulkSize[j], pl, stop); });
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
            stop = true;
            a.join();
            b.join();
            rr[k][j].push_back(rr_us);
            bulk[k][j].push_back(mbs);
          }
        for (int i = 0; i < 3; ++i)
          for (int k = 0; k < 3; ++k) {
            auto p = k == 2 ? bp::unix_pair() : connect(k == 1, *svc[k].rr[i], true);
            std::atomic<bool> stop{false};
            double us = 0;
            std::thread a([&] { us = run_rr(p, kRrSize[i], pl, stop); });
            std::this_thread::sleep_for(std::chrono::milliseconds(ms / 2));
            stop = true;
            a.join();
            alone[k][i].push_back(us);
          }
      }
      std::cout << "\n== " << pl.name << " ==\n"
                << "mixed: request/response round trip (us) next to bulk (MB/s), at the same time\n"
                << "rr size  bulk write nagle |  rr tcp  rr byp  ratio |  bulk tcp  bulk byp  ratio\n";
      for (int j = 0; j < 6; ++j) {
        double rt = median(rr[0][j]), rb = median(rr[1][j]);
        double bt = median(bulk[0][j]), bb = median(bulk[1][j]);
        std::cout << std::setw(7) << kRrSize[j % 3] << "  " << std::setw(10) << kBulkSize[j]
                  << std::setw(6) << (kBulkNagle[j] ? "on" : "off") << " | " << std::setw(7) << rt
                  << " " << std::setw(7) << rb << " " << std::setw(5) << rb / rt << "x | "
                  << std::setw(9) << bt << " " << std::setw(9) << bb << " " << std::setw(5)
                  << bb / bt << "x\n";
      }
      std::cout << "request/response alone (us): size  tcp  bypass  unix  bypass/tcp  "
                   "bypass/unix  saved per round trip\n";
      for (int i = 0; i < 3; ++i) {
        double t = median(alone[0][i]), b = median(alone[1][i]), u = median(alone[2][i]);
        std::cout << std::setw(6) << kRrSize[i] << "  " << std::setw(7) << t << " "
                  << std::setw(7) << b << " " << std::setw(7) << u << "  " << std::setw(6)
                  << b / t << "x  " << std::setw(6) << b / u << "x  " << std::setw(7) << t - b
                  << " us\n";
      }
    }
    std::cout << std::flush;
    sh(BPFMGR_BENCH_BINARY " status ops --pin-root " + g_pins +
       " | grep -E 'service |auto_|samples|learn_callbacks'");
    sh(BPFMGR_BENCH_BINARY " status msg --pin-root " + g_pins +
       " | grep -E 'redirected_msgs|passed_msgs|queue_|samples'");
  } catch (const std::exception& e) {
    std::cerr << "bench_sockops_mixed: " << e.what() << "\n";
    rc = 1;
  }
  teardown();
  return rc;
}
