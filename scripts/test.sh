#!/usr/bin/env bash
# Sets up a fresh machine, builds everything and runs the whole test suite.
# Needs root: the tests load real BPF programs into the running kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
# Serial: the tests measure traffic and share one kernel.
ctest --test-dir build --output-on-failure --timeout 600 "$@"
