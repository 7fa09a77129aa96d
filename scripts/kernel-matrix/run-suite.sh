#!/usr/bin/env bash
# The kernel matrix, one kernel: boots KERNEL (run-in-kernel.sh) and runs,
# inside it on this build tree, the tests labelled `kernel` plus one real
# load per plugin option (tests/kernels/loads/), then compares the failures
# with tests/kernels/expected-failures/KERNEL.txt.
#
#   scripts/kernel-matrix/run-suite.sh KERNEL [options] [-- ctest args...]
#     --build-dir DIR   the build tree (default: ./build of the checkout)
#     --results DIR     where results go (default BUILD/kernel-matrix/KERNEL)
#     --timeout S       guest wall-clock limit (default 1800)
#     --strict          every failure fails, expected or not
#     --report-only     per-test results are reported, not gating: only a
#                       guest that does not boot or finish fails (the suite's
#                       default until a verified baseline per kernel exists:
#                       docs/kernels.md)
#
# Exit: 0 when every failure is an expected one (or none, with --strict);
# 1 otherwise; 124/125 when the guest timed out or did not boot.
# Results: junit.xml, loads.tsv, console.log, meta; `matrix.py table` turns
# several into docs/kernels.md's tables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

(($#)) || die "usage: $0 KERNEL [--build-dir DIR] [--results DIR] [--timeout S] [--strict] [-- ctest args]"
kernel=$1; shift
build=$src/build results= timeout=${BPFMGR_MATRIX_TIMEOUT:-1800} strict=0 report_only=0
while (($#)); do
  case $1 in
    --build-dir) build=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --strict) strict=1; shift ;;
    --report-only) report_only=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[[ ${BPFMGR_IN_GUEST:-} != 1 ]] || die "already inside a guest: no nesting"
build=$(realpath -e "$build") || die "no build tree"
[[ -x $build/bin/bpfmgr ]] || die "$build is not a built tree (no bin/bpfmgr)"
kname=${kernel##*/}
results=${results:-$build/kernel-matrix/$kname}
rm -rf "$results"; mkdir -p "$results"; results=$(realpath "$results")

# In the guest, tests get their default timeout wider: code runs 17-33x slower.
ctest_args=("$@")
[[ " ${ctest_args[*]} " == *" --timeout "* ]] || ctest_args+=(--timeout 300)
# The blocking-echo integrity tests move up to 1 MiB per run, 80 runs per
# mode on the host: minutes each under TCG. A guest checks a sample of the
# shapes (the host runs them all); the caller's value wins.
export BPFMGR_SOCKOPS_INTEGRITY_RUNS=${BPFMGR_SOCKOPS_INTEGRITY_RUNS:-15}

start=$SECONDS
set +e
# pdeathsig: killed by ctest's timeout, this script takes the guest with it.
setpriv --pdeathsig TERM -- "$here/run-in-kernel.sh" --timeout "$timeout" --share "$results" --console "$results/console.log" \
  --timing "$results/guest-timing" \
  "$kernel" -- "$here/guest-suite.sh" "$build" "$src" "$results" "${ctest_args[@]}"
rc=$?
set -e
guest_s=$((SECONDS - start))
boot_s=$(sed -n 's/^boot_s=//p' "$results/guest-timing" 2>/dev/null)
{
  echo "kernel=$kname"
  echo "release=$(cat "$results/kernel-release" 2>/dev/null || echo '?')"
  # The commit the build tree was configured from (may be another checkout).
  bsrc=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null)
  echo "commit=$(git -C "${bsrc:-$src}" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "date=$(date -u +%F)"
  echo "boot_s=${boot_s:-?}"
  echo "guest_s=$guest_s"
  echo "guest_rc=$rc"
} > "$results/meta"

python3 "$here/matrix.py" summary "$results"
((guest_s <= 900)) || log "$kernel: over the 15-minute budget (${guest_s}s; docs/kernels.md)"
if ((rc == 124 || rc == 125)); then
  log "$kernel: the guest failed ($rc); console in $results/console.log"
  exit "$rc"
fi
if ((strict)); then
  ((rc == 0)) || { log "$kernel: failures (--strict)"; exit 1; }
  exit 0
fi
if ((report_only)); then
  python3 "$here/matrix.py" check "$results" "$src/tests/kernels/expected-failures/$kname.txt" ||
    log "$kernel: failures above are reported, not gating (--report-only; docs/kernels.md)"
  [[ -s $results/junit.xml ]] || { log "$kernel: no test results (the guest did not finish ctest)"; exit 1; }
  exit 0
fi
python3 "$here/matrix.py" check "$results" "$src/tests/kernels/expected-failures/$kname.txt"
