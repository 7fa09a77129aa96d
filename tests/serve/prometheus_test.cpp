// `bpfmgr serve` with every first-party plugin loaded, checked by the tools
// of Debian's `prometheus` package: promtool accepts the exposition, and a
// real Prometheus server scraping every second sees a counter grow after
// traffic, read back through its HTTP query API.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "serve_support.hpp"
#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

// The example manifest (all four plugins), on a private pin root and cgroup.
std::string example_manifest(const PinRoot& root, const ScopedCgroup& cg) {
  std::ifstream in(source_dir() + "/examples/manifests/bpfmgr.toml");
  std::stringstream ss;
  ss << in.rdbuf();
  auto text = std::regex_replace(ss.str(), std::regex(R"(cgroup = "bpfmgr-demo")"),
                                 "cgroup = \"" + cg.path() + "\"");
  return std::regex_replace(text, std::regex(R"(pin_root = "[^"]*")"),
                            "pin_root = \"" + root.path() + "\"");
}

// Opens and closes `n` TCP connections over loopback to port `port`.
void tcp_traffic(int n, int port) {
  int srv = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  ASSERT_EQ(::bind(srv, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(srv, 128), 0);
  for (int i = 0; i < n; ++i) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    int s = ::accept4(srv, nullptr, nullptr, SOCK_CLOEXEC);
    ::write(c, "x", 1);
    char b;
    ::read(s, &b, 1);
    ::close(c);
    ::close(s);
  }
  ::close(srv);
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/bpfmgr-prometheus-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

TEST(Prometheus, PromtoolAcceptsTheMetricsOfEveryPlugin) {
  PinRoot root;
  ScopedCgroup cg;
  auto s = start_serve(write_temp_file(example_manifest(root, cg)),
                       {"--interval", "300", "--enable-bpf-stats"});
  ASSERT_TRUE(s.process->running());
  auto m = s.metrics();
  for (auto inst : {"bypass-ops", "bypass-msg", "tcpint", "probes"})
    EXPECT_EQ(metric(m, std::string("bpfmgr_instance_up{instance_name=\"") + inst + "\"}"), 1)
        << inst << "\n" << m;
  EXPECT_NE(m.find("bpfmgr_program_runs_total{instance_name=\"probes\""), std::string::npos);
  auto file = write_temp_file(m, ".prom");
  auto r = run({"sh", "-c", "promtool check metrics < " + file});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // promtool's lint findings (naming, units, counters) are on stdout/err.
  EXPECT_EQ(r.out + r.err, "");
}

TEST(Prometheus, RealServerScrapesServeAndSeesACounterGrowAfterTraffic) {
  PinRoot root;
  ScopedCgroup cg;
  // The probes count only the test's own port: the ring buffer is not
  // filled by the rest of the machine's traffic before ours comes.
  int traffic_port = free_port();
  auto text = std::regex_replace(example_manifest(root, cg), std::regex("ring_buffer_kb = 1024"),
                                 "ring_buffer_kb = 1024\nports = [" +
                                     std::to_string(traffic_port) + "]");
  auto s = start_serve(write_temp_file(text), {"--interval", "300"});
  ASSERT_TRUE(s.process->running());

  TempDir dir;
  int web_port = free_port();
  std::ofstream(dir.path + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
         "scrape_configs:\n  - job_name: bpfmgr\n    static_configs:\n"
         "      - targets: ['127.0.0.1:" << s.port << "']\n";
  // Killed (TERM, then KILL) and its data dir removed when the test ends.
  struct Prom {
    pid_t pid;
    ~Prom() {
      ::kill(pid, SIGTERM);
      for (int i = 0; i < 100 && ::waitpid(pid, nullptr, WNOHANG) == 0; ++i)
        ::usleep(100000);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  };
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto log = dir.path + "/prometheus.log";
    std::freopen(log.c_str(), "w", stdout);
    std::freopen(log.c_str(), "a", stderr);
    auto cfg = "--config.file=" + dir.path + "/prometheus.yml";
    auto data = "--storage.tsdb.path=" + dir.path + "/data";
    auto web = "--web.listen-address=127.0.0.1:" + std::to_string(web_port);
    ::execlp("prometheus", "prometheus", cfg.c_str(), data.c_str(), web.c_str(),
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  Prom prom{pid};

  const std::string series =
      "bpfmgr_plugin_probes_events_emitted_total{instance_name=\"probes\",job=\"bpfmgr\"}";
  auto query = [&]() -> std::optional<double> {
    auto r = http_get(web_port, "/api/v1/query?query=" +
                                    httplib::detail::encode_query_param(series));
    if (!r || r->status != 200) return std::nullopt;
    auto j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || j["data"]["result"].empty()) return std::nullopt;
    return std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
  };
  std::optional<double> before;
  ASSERT_TRUE(wait_until([&] { return (before = query()).has_value(); }, 60s))
      << "Prometheus never scraped serve";
  auto up = http_get(web_port, "/api/v1/query?query=up");
  ASSERT_TRUE(up);
  EXPECT_NE(up->body.find("\"value\":["), std::string::npos);

  tcp_traffic(50, traffic_port);
  // Each connection is at least a connect and an accept event.
  std::optional<double> after;
  EXPECT_TRUE(wait_until(
      [&] {
        after = query();
        return after && *after >= *before + 100;
      },
      30s))
      << "before " << *before << " after " << after.value_or(-1);
  std::printf("events_emitted through Prometheus: %.0f -> %.0f\n", *before,
              after.value_or(-1));
}

}  // namespace
}  // namespace bpfmgr::test
