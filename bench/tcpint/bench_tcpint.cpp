// bench_tcpint [--rounds N] [--rr-iters N] [--rr-size B] [--bulk-ms MS]
//              [--micro-iters N] [--pin-cpu CPU]
// Runs the tcpint plugin's benchmark in process through the core (the
// plugin is found next to this binary, or on BPFMGR_PLUGIN_PATH): two netns
// joined by a veth, request/response latency, bulk throughput and syscall
// costs with the plugin off, with sock_ops only and with the syscall hook,
// interleaved round by round. See docs/tcpint.md for results.
#include <string>
#include <vector>

#include "commands.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return bpfmgr::cmd_bench("tcpint", args);
}
