#!/usr/bin/env bash
# Installs everything bpfmgr needs to build, test and benchmark, from Debian's
# packages only. Idempotent: safe to run on a machine that already has them.
# BPFMGR_DEPS=build installs only what building the binary, the plugins and
# the .deb needs (the container image's build stage).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  libboost-dev
  libspdlog-dev libfmt-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  nettle-dev     # sha256 of plugin files
  dpkg-dev file  # cpack's dependency list (dpkg-shlibdeps, file)
)
if [[ ${BPFMGR_DEPS:-all} != build ]]; then
  packages+=(
    libgtest-dev libgmock-dev googletest libbenchmark-dev
    libcpp-httplib-dev  # the serve tests' HTTP client
    libc++-dev libc++abi-dev   # the SDK test builds a plugin against libc++
    prometheus     # promtool and a real server for the metrics tests
    lintian binutils   # the package tests: lintian, objcopy (the upgrade test rebuilds a .deb)
    iproute2 tcpdump procps strace util-linux curl
    libbpf-tools   # tcplife and syscount, the peers bench_probes compares against
    iperf3 redis-server redis-tools  # real clients for bench/sockops/real_clients.sh
    clang-14 libclang-rt-14-dev   # libFuzzer and sanitizers for scripts/fuzz.sh
    # the kernel matrix (scripts/kernel-matrix/): QEMU guests on Debian's kernels
    qemu-system-x86 busybox-static cpio xz-utils zstd kmod python3
  )
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Kubernetes manifests' schema test (tests/deploy) runs on Node.js and
# installs its pinned npm packages into the build tree. A Node.js already on
# the machine (e.g. a newer one from elsewhere) is kept.
if [[ ${BPFMGR_DEPS:-all} != build ]] && ! command -v npm > /dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm
fi
