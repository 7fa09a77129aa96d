// bpfmgr::bench, everything but the Google Benchmark reporter: include
// <bpfmgr/bench/ratio_reporter.hpp> for that.
#pragma once

#include <bpfmgr/bench/fixtures.hpp>
#include <bpfmgr/bench/measure.hpp>
#include <bpfmgr/bench/process.hpp>
#include <bpfmgr/bench/two_hosts.hpp>
