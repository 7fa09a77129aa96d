#!/usr/bin/env bash
# Sets up a fresh machine, builds bpfmgr, loads the example manifest and
# shows what is running. `build/bin/bpfmgr unpin` removes it again.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
manifest="${1:-examples/manifests/bpfmgr.toml}"
# The example's traffic-changing plugins act only inside this cgroup.
cgroup2=$(findmnt -t cgroup2 -n -o TARGET | head -n1)
mkdir -p "$cgroup2/bpfmgr-demo"
build/bin/bpfmgr load "$manifest"
build/bin/bpfmgr status
