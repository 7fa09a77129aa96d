// Running `bpfmgr serve` as a child process in tests, and reading its
// metrics. Every child is stopped (TERM, then KILL) when its owner goes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bpfmgr::test {

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// GET http://127.0.0.1:port/path; nullopt when nothing answers.
struct HttpReply {
  int status = 0;
  std::string body;
};
std::optional<HttpReply> http_get(int port, const std::string& path);

// The value of one series ("name" or "name{a=\"b\"}", exactly as exposed).
std::optional<double> metric(const std::string& text, const std::string& series);

// The sum of every series of `name` whose labels contain `labels` (a
// substring such as `reason="link_pin_missing"`; "" sums them all).
double metric_sum(const std::string& text, const std::string& name,
                  const std::string& labels = "");

// Polls `pred` every 50 ms until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::duration<double> timeout);

class ServeProcess {
 public:
  // `bpfmgr serve args...`, output to a log file, BPFMGR_PLUGIN_PATH set.
  explicit ServeProcess(std::vector<std::string> args,
                        std::vector<std::pair<std::string, std::string>> env = {});
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `sig` and waits up to `timeout`; returns the exit code (or 128 +
  // signal when killed).
  int stop(int sig, std::chrono::duration<double> timeout = std::chrono::seconds(30));
  // Waits for the process to exit on its own.
  std::optional<int> wait_exit(std::chrono::duration<double> timeout);
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string log_path_;
};

// Serves on a free port; waits until /metrics answers with the first pass
// done (applied, or degraded). Fails the test (and returns nullptr-like empty port) otherwise.
struct Served {
  int port = 0;
  std::unique_ptr<ServeProcess> process;
  std::string metrics() const;
};
Served start_serve(const std::string& manifest, std::vector<std::string> extra = {});

}  // namespace bpfmgr::test
