#!/usr/bin/env bash
# Runs inside a guest booted by run-suite.sh (not by hand): the test subset
# labelled `kernel`, then one real load + unpin per plugin option in
# tests/kernels/loads/. Everything it records goes to RESULTS (a writable
# share); the exit code is ctest's.
#   guest-suite.sh BUILD_DIR SOURCE_DIR RESULTS [ctest args...]
set -uo pipefail
build=$1 src=$2 results=$3; shift 3
[[ ${BPFMGR_IN_GUEST:-} == 1 ]] || { echo "guest-suite.sh runs inside a guest (run-suite.sh)" >&2; exit 125; }
uname -r > "$results/kernel-release"
t0=$SECONDS

# The load probes first: they are quick, and a ctest run cut by the timeout
# still leaves them.
bpfmgr=$build/bin/bpfmgr
mkdir -p /sys/fs/cgroup/kernel-matrix
: > "$results/loads.tsv"
for m in "$src"/tests/kernels/loads/*.toml; do
  name=$(basename "$m" .toml)
  s=$SECONDS
  # ok: loaded; refused: validate refused it before anything was loaded, for
  # a kernel feature it names (exit 2, "... needs X (Linux N+); this kernel
  # is R": the declared requirement working, not a failure); fail: anything
  # else, a load that failed (a verifier or CO-RE error is a bug).
  out=$(timeout 300 "$bpfmgr" load "$m" 2>&1); lrc=$?
  if ((lrc == 0)); then verdict=ok
  elif ((lrc == 2)) && grep -q '; this kernel is ' <<< "$out"; then verdict=refused
  else verdict=fail; fi
  timeout 120 "$bpfmgr" unpin --pin-root /sys/fs/bpf/kernel-matrix --quiet > /dev/null 2>&1
  # The first line that says why (bpfmgr prints the verifier's reason or
  # libbpf's error first), tabs and newlines flattened.
  why=
  [[ $verdict == ok ]] || why=$(grep -m1 -iE 'error|fail|invalid|unknown|not |needs ' <<< "$out" || head -1 <<< "$out")
  printf '%s\t%s\t%s\t%s\n' "$name" "$verdict" "$((SECONDS - s))" "$(tr '\t' ' ' <<< "$why" | cut -c1-300)" >> "$results/loads.tsv"
  printf 'load %-50s %s (%ss)\n' "$name" "$verdict" "$((SECONDS - s))"
  [[ $verdict == ok ]] || printf "%s\n" "$out" | head -n 400 > "$results/load-$name.log"
done
echo "loads: $((SECONDS - t0))s"

t1=$SECONDS
# BPFMGR_MATRIX_TESTS: a test-name regex instead of the label (for a build
# tree configured before tests/kernels existed, or to narrow a run).
select=(-L '^kernel$')
[[ -n ${BPFMGR_MATRIX_TESTS:-} ]] && select=(-R "$BPFMGR_MATRIX_TESTS")
ctest --test-dir "$build" "${select[@]}" --output-on-failure \
  --output-junit "$results/junit.xml" "$@"
rc=$?
echo "ctest -L kernel: $((SECONDS - t1))s, exit $rc"
printf 'loads_s=%s\nctest_s=%s\nctest_rc=%s\n' "$((t1 - t0))" "$((SECONDS - t1))" "$rc" > "$results/timing"
exit "$rc"
