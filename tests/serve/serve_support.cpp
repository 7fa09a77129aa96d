#include "serve_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "test_support.hpp"

namespace bpfmgr::test {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::optional<HttpReply> http_get(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2);
  c.set_read_timeout(10);
  auto r = c.Get(path.c_str());
  if (!r) return std::nullopt;
  return HttpReply{r->status, r->body};
}

std::optional<double> metric(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  return std::nullopt;
}

double metric_sum(const std::string& text, const std::string& name,
                  const std::string& labels) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  while (std::getline(in, line)) {
    if (line.compare(0, name.size() + 1, name + "{") != 0) continue;
    auto close = line.rfind('}');
    if (close == std::string::npos || line.substr(0, close).find(labels) == std::string::npos)
      continue;
    sum += std::stod(line.substr(close + 2));
  }
  return sum;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::duration<double> timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

ServeProcess::ServeProcess(std::vector<std::string> args,
                           std::vector<std::pair<std::string, std::string>> env) {
  log_path_ = write_temp_file("", ".log");
  args.insert(args.begin(), {bpfmgr_binary(), "serve"});
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
    for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    // Signals the test blocked are not the child's business.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
}

bool ServeProcess::running() {
  if (exit_code_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

std::optional<int> ServeProcess::wait_exit(std::chrono::duration<double> timeout) {
  wait_until([&] { return !running(); }, timeout);
  return exit_code_;
}

int ServeProcess::stop(int sig, std::chrono::duration<double> timeout) {
  if (running()) ::kill(pid_, sig);
  if (!wait_exit(timeout)) {
    ::kill(pid_, SIGKILL);
    wait_exit(std::chrono::seconds(10));
  }
  return exit_code_.value_or(-1);
}

ServeProcess::~ServeProcess() {
  if (pid_ > 0) stop(SIGTERM);
}

std::string ServeProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Served::metrics() const {
  auto r = http_get(port, "/metrics");
  return r && r->status == 200 ? r->body : "";
}

Served start_serve(const std::string& manifest, std::vector<std::string> extra) {
  Served s;
  s.port = free_port();
  std::vector<std::string> args{manifest, "--metrics-address",
                                "127.0.0.1:" + std::to_string(s.port)};
  args.insert(args.end(), extra.begin(), extra.end());
  s.process = std::make_unique<ServeProcess>(args);
  bool up = wait_until(
      [&] {
        if (!s.process->running()) return true;
        // The first pass is over (applied, or degraded with the failing
        // instances reported).
        auto m = s.metrics();
        return metric(m, "bpfmgr_reconciles_total{trigger=\"start\"}").value_or(0) >= 1;
      },
      std::chrono::seconds(60));
  EXPECT_TRUE(up && s.process->running()) << "serve did not come up:\n" << s.process->log();
  return s;
}

}  // namespace bpfmgr::test
