#!/bin/sh
# Every kill point of load, update, drop and unpin (issue #17 item 2):
# SIGKILL at each mkdir, mkdirat, rename, renameat2, unlink, unlinkat,
# rmdir and bpf() call, each repaired by a load and by an unpin. Takes
# an hour or more; CI runs a random sample of the same test.
# Usage: scripts/fault-sweep.sh [BUILD_DIR]   (as root)
# BPFMGR_FAULT_SYSCALLS=unlinkat,rmdir narrows it to those syscalls.
set -eu
build=${1:-build}
BPFMGR_FAULT_ALL=1 exec "$build/tests/core/core_safety_test" \
  --gtest_filter='CrashConsistency.KillAtEveryStateChangingSyscallThenLoadOrUnpinRepairs'
