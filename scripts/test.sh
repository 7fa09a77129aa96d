#!/usr/bin/env bash
# Sets up a fresh machine, builds everything and runs the whole test suite.
# Needs root: the tests load real BPF programs into the running kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# Warnings are errors here, so the tree stays warning-free.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBPFMGR_WERROR=ON
cmake --build build -j"$(nproc)"
# The package test installs the .deb system-wide and purges it; the README
# test command runs it (set BPFMGR_SYSTEM_TESTS=0 to skip it on a shared box).
export BPFMGR_SYSTEM_TESTS="${BPFMGR_SYSTEM_TESTS:-1}"
# Serial: the tests measure traffic and share one kernel.
ctest --test-dir build --output-on-failure --timeout 600 "$@"
