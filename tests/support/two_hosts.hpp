// The tests' name for the two-hosts lab, which lives in the installed bench
// helper library (<bpfmgr/bench/two_hosts.hpp>) so harnesses share it.
#pragma once

#include <bpfmgr/bench/two_hosts.hpp>

namespace bpfmgr::test::lab {
using bench::Channel;
using bench::Child;
using bench::echo_until_eof;
using bench::exec;
using bench::ExecResult;
using bench::Host;
using bench::local_port;
using bench::recv_exact;
using bench::send_all;
using bench::tcp_connect;
using bench::tcp_listen;
using bench::TwoHosts;
}  // namespace bpfmgr::test::lab
