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
#include <algorithm>
#include <atomic>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <bpfmgr/bench.hpp>

#include "bypass_workload.hpp"

namespace bp = bpfmgr::bypass;
using Clock = std::chrono::steady_clock;

namespace {

namespace bench = bpfmgr::bench;

// The bypass's private cgroup and pin root, loaded through the real bpfmgr;
// both go away when main returns.
std::optional<bench::ScopedCgroup> g_cgroup;
std::optional<bench::LoadedManifest> g_bypass;

void load_bypass(const std::string& select) {
  g_cgroup.emplace();
  g_bypass.emplace("[[instance]]\nname = \"ops\"\nplugin = \"sockops\"\n"
                   "[instance.options]\ncgroup = \"" + g_cgroup->path() + "\"\n"
                   "select = \"" + select + "\"\n"
                   "[[instance]]\nname = \"msg\"\nplugin = \"sockmsg\"\n"
                   "[instance.maps]\nsock_hash = \"ops\"\nservices = \"ops\"\n"
                   "sock_state = \"ops\"\nsock_index = \"ops\"\n",
                   std::vector<std::string>{BPFMGR_BENCH_PLUGIN_DIR});
}

// The lines of `bpfmgr status INSTANCE` that name one of `keys`.
void print_status_lines(const std::string& instance, const std::vector<std::string>& keys) {
  auto r = bench::run_bpfmgr({"status", instance, "--pin-root", g_bypass->pin_root()});
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);)
    for (auto& k : keys)
      if (line.find(k) != std::string::npos) {
        std::cout << line << "\n";
        break;
      }
}

struct Placement {
  const char* name;
  int client_cpu, server_cpu;
};

// Round trips of `size` until stop; returns mean round trip in us.
double run_rr(bp::SocketPair& p, std::size_t size, const Placement& pl,
              std::atomic<bool>& stop) {
  std::thread echo([&] {
    bench::pin_to_cpu(pl.server_cpu);
    std::vector<char> b(size);
    try {
      for (;;) {
        bp::read_all(p.b, b.data(), size);
        bp::write_all(p.b, b.data(), size);
      }
    } catch (...) {
    }
  });
  bench::pin_to_cpu(pl.client_cpu);
  std::vector<char> b(size, 'r');
  std::uint64_t n = 0;
  auto t0 = Clock::now();
  while (!stop) {
    bp::write_all(p.a, b.data(), size);
    bp::read_all(p.a, b.data(), size);
    ++n;
  }
  auto t1 = Clock::now();
  // Ends as request/response clients do, by closing (SHUT_RDWR keeps the fd
  // valid for the echo thread). A shutdown(SHUT_WR) after a two-way exchange
  // marks the service "half-closes, reads on": it stays on TCP.
  ::shutdown(p.a, SHUT_RDWR);
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
    bench::pin_to_cpu(pl.server_cpu);
    std::vector<char> b(256 << 10);
    for (;;) {
      ssize_t r = ::read(p.b, b.data(), b.size());
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) break;
      got += r;
    }
    t_end = Clock::now();
  });
  bench::pin_to_cpu(pl.client_cpu);
  std::vector<char> b(chunk, 'b');
  while (!stop) bp::write_all(p.a, b.data(), chunk);
  ::shutdown(p.a, SHUT_WR);
  reader.join();
  return got / std::chrono::duration<double>(t_end - t0).count() / 1e6;
}

struct Services {
  std::unique_ptr<bp::Listener> rr[3], bulk[6];
};
constexpr std::size_t kRrSize[3] = {64, 1024, 16384};
constexpr std::size_t kBulkSize[6] = {64, 4096, 65536, 64, 4096, 65536};
constexpr bool kBulkNagle[6] = {true, true, true, false, false, false};

bp::SocketPair connect(bool bypass, const bp::Listener& l, bool nodelay) {
  if (bypass) g_cgroup->enter();
  auto p = l.connect(nodelay);
  if (bypass) g_cgroup->leave();
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
  try {
    load_bypass(select);
  } catch (const std::exception& e) {
    std::cerr << "bench_sockops_mixed: cannot load the bypass (root? bpfmgr built?): "
              << e.what() << "\n";
    return 1;
  }
  int rc = 0;
  try {
    Services svc[2];  // [0] plain TCP (outside the cgroup), [1] bypass cgroup
    for (int k = 0; k < 2; ++k) {
      if (k == 1) g_cgroup->enter();
      for (auto& l : svc[k].rr) l = std::make_unique<bp::Listener>();
      for (auto& l : svc[k].bulk) l = std::make_unique<bp::Listener>();
      if (k == 1) g_cgroup->leave();
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
        double rt = bench::median(rr[0][j]), rb = bench::median(rr[1][j]);
        double bt = bench::median(bulk[0][j]), bb = bench::median(bulk[1][j]);
        std::cout << std::setw(7) << kRrSize[j % 3] << "  " << std::setw(10) << kBulkSize[j]
                  << std::setw(6) << (kBulkNagle[j] ? "on" : "off") << " | " << std::setw(7) << rt
                  << " " << std::setw(7) << rb << " " << std::setw(5) << rb / rt << "x | "
                  << std::setw(9) << bt << " " << std::setw(9) << bb << " " << std::setw(5)
                  << bb / bt << "x\n";
      }
      std::cout << "request/response alone (us): size  tcp  bypass  unix  bypass/tcp  "
                   "bypass/unix  saved per round trip\n";
      for (int i = 0; i < 3; ++i) {
        double t = bench::median(alone[0][i]), b = bench::median(alone[1][i]), u = bench::median(alone[2][i]);
        std::cout << std::setw(6) << kRrSize[i] << "  " << std::setw(7) << t << " "
                  << std::setw(7) << b << " " << std::setw(7) << u << "  " << std::setw(6)
                  << b / t << "x  " << std::setw(6) << b / u << "x  " << std::setw(7) << t - b
                  << " us\n";
      }
    }
    std::cout << std::flush;
    print_status_lines("ops", {"service ", "auto_", "samples", "learn_callbacks"});
    print_status_lines("msg", {"redirected_msgs", "passed_msgs", "queue_", "samples"});
  } catch (const std::exception& e) {
    std::cerr << "bench_sockops_mixed: " << e.what() << "\n";
    rc = 1;
  }
  g_bypass.reset();
  g_cgroup.reset();
  return rc;
}
