#!/usr/bin/env bash
# Builds the manifest fuzz target (tests/fuzz) with clang-14, libFuzzer,
# ASan and UBSan, and runs it on a corpus seeded with the example manifests
# and the kept regression inputs. Exits non-zero on a crash, a hang or a leak;
# the input that caused it is left in BUILD_DIR/artifacts/ (copy it to
# tests/fuzz/regressions/ so the normal test suite replays it for good).
#
#   scripts/fuzz.sh [--seconds N] [--runs N] [--build-dir DIR] [--main-build DIR]
#
# --main-build is the normal build whose plugins the resolver checks options
# against (default: build/).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$src/build-fuzz
main_build=$src/build
seconds=60
runs=-1
while (($#)); do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; seconds=0; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --main-build) main_build=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--runs N] [--build-dir DIR] [--main-build DIR]" >&2; exit 2 ;;
  esac
done

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
cmake -S "$src" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 "${launcher[@]}" \
  -DBPFMGR_FUZZ=ON -DBPFMGR_BUILD_TESTS=OFF -DBPFMGR_BUILD_BENCH=OFF >/dev/null
cmake --build "$build_dir" --target manifest_fuzz -j"$(nproc)" >/dev/null

corpus=$build_dir/corpus      # grows across runs
artifacts=$build_dir/artifacts
mkdir -p "$corpus" "$artifacts"
cp "$src"/examples/manifests/*.toml "$corpus"/
export BPFMGR_PLUGIN_PATH=$main_build/lib/bpfmgr/test-plugins:$main_build/lib/bpfmgr/plugins
export BPFMGR_LOG_LEVEL=off
# Plugins stay loaded for the whole run: what they allocate is no leak.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
"$build_dir"/bin/manifest_fuzz -max_total_time="$seconds" -runs="$runs" \
  -timeout=60 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$corpus" "$src"/tests/fuzz/regressions
