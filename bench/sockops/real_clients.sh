#!/usr/bin/env bash
# Real clients over the same-host bypass: iperf3 (-l 64, 4K, 128K) and
# redis-benchmark (one connection without pipelining; -c 4 -P 16), both ends
# inside the bypass's cgroup vs both outside it, interleaved per round, in
# one run. Prints medians and in/out ratios. Needs root, iperf3,
# redis-server, redis-benchmark (scripts/install-deps.sh).
#
#   bench/sockops/real_clients.sh [--select all|auto] [--rounds N]
#                                 [--seconds S] [--bpfmgr PATH] [--plugins DIR]
set -euo pipefail

select_mode=auto rounds=3 seconds=3
bpfmgr=${BPFMGR:-build/bin/bpfmgr}
plugins=${BPFMGR_PLUGIN_PATH:-build/plugins}
while (($#)); do
  case $1 in
    --select) select_mode=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --bpfmgr) bpfmgr=$2; shift 2 ;;
    --plugins) plugins=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case $select_mode in all|auto) ;; *) echo "--select all|auto" >&2; exit 2 ;; esac
for t in iperf3 redis-server redis-benchmark; do
  command -v "$t" >/dev/null || { echo "$t is missing: scripts/install-deps.sh" >&2; exit 1; }
done

cg_root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
tag=bpfmgr-bench-real-$$
cg=$cg_root/$tag
pins=/sys/fs/bpf/$tag
work=$(mktemp -d /tmp/$tag.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  BPFMGR_PLUGIN_PATH=$plugins "$bpfmgr" unpin --pin-root "$pins" --quiet >/dev/null 2>&1 || true
  rmdir "$cg" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$cg"
cat > "$work/m.toml" <<TOML
pin_root = "$pins"
[[instance]]
name = "ops"
plugin = "sockops"
[instance.options]
cgroup = "$tag"
select = "$select_mode"
[[instance]]
name = "msg"
plugin = "sockmsg"
[instance.maps]
sock_hash = "ops"
services = "ops"
sock_state = "ops"
sock_index = "ops"
TOML
BPFMGR_PLUGIN_PATH=$plugins "$bpfmgr" load "$work/m.toml" >/dev/null

# in_cg CMD...: runs CMD inside the bypass cgroup. bg_in_cg CMD... &: the
# same in the background, with $! the server's own pid (killed at exit).
in_cg() { sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"; }
bg_in_cg() { exec sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"; }
bg() { exec "$@"; }
# A server left over on one of our ports would be measured instead.
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# One iperf3 measurement: Gbit/s at the receiver. $1 = in|out, $2 = port, $3 = -l
iperf_once() {
  local where=$1 port=$2 len=$3 run=()
  [[ $where == in ]] && run=(in_cg)
  "${run[@]}" iperf3 -c 127.0.0.1 -p "$port" -l "$len" -t "$seconds" -f g 2>&1 |
    awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i-1) }'
}

# One redis-benchmark measurement: SET+GET requests/s (mean of both).
redis_once() {
  local where=$1 port=$2 run=()
  shift 2
  [[ $where == in ]] && run=(in_cg)
  "${run[@]}" redis-benchmark -p "$port" -t set,get -q "$@" 2>&1 | tr '\r' '\n' |
    awk '/requests per second/ { s += $2; n++ } END { if (n) printf "%.0f\n", s / n }'
}

# Servers: one per case and side (auto mode learns per listening port).
port=15201
declare -A iperf_port
for len in 64 4K 128K; do
  for where in in out; do
    iperf_port[$where$len]=$port
    port_free "$port" || { echo "port $port is in use" >&2; exit 1; }
    if [[ $where == in ]]; then bg_in_cg iperf3 -s -p "$port" >/dev/null 2>&1 &
    else bg iperf3 -s -p "$port" >/dev/null 2>&1 & fi
    pids+=($!)
    port=$((port + 1))
  done
done
declare -A redis_port
for where in in out; do
  redis_port[$where]=$port
  args=(--port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --logfile "")
  port_free "$port" || { echo "port $port is in use" >&2; exit 1; }
  if [[ $where == in ]]; then bg_in_cg redis-server "${args[@]}" >/dev/null 2>&1 &
  else bg redis-server "${args[@]}" >/dev/null 2>&1 & fi
  pids+=($!)
  port=$((port + 1))
done
sleep 1

# Learning: a short run of each case first (auto needs min_samples samples).
for len in 64 4K 128K; do
  for i in 1 2; do
    in_cg iperf3 -c 127.0.0.1 -p "${iperf_port[in$len]}" -l "$len" -t 1 >/dev/null 2>&1 || true
  done
done
for i in 1 2; do
  in_cg redis-benchmark -p "${redis_port[in]}" -t set,get -n 5000 -q >/dev/null 2>&1 || true
  in_cg redis-benchmark -p "${redis_port[in]}" -t set,get -n 5000 -c 4 -P 16 -q >/dev/null 2>&1 || true
done

for r in $(seq "$rounds"); do
  for len in 64 4K 128K; do
    for where in out in; do
      iperf_once "$where" "${iperf_port[$where$len]}" "$len" >> "$work/iperf-$where-$len"
    done
  done
  for where in out in; do
    redis_once "$where" "${redis_port[$where]}" -n 100000 -c 1 >> "$work/redis-$where-plain"
    redis_once "$where" "${redis_port[$where]}" -n 100000 -c 4 -P 16 >> "$work/redis-$where-pipe"
  done
done

echo "select = $select_mode; $rounds interleaved rounds, medians"
printf '%-28s %12s %12s %8s\n' case "plain TCP" "bypass cg" ratio
for len in 64 4K 128K; do
  o=$(median < "$work/iperf-out-$len"); i=$(median < "$work/iperf-in-$len")
  printf '%-28s %12s %12s %7.2fx\n' "iperf3 -l $len (Gbit/s)" "$o" "$i" "$(awk -v a="$i" -v b="$o" 'BEGIN { print (b > 0 ? a / b : 0) }')"
done
for k in plain pipe; do
  o=$(median < "$work/redis-out-$k"); i=$(median < "$work/redis-in-$k")
  name="redis -c 1 (req/s)"; [[ $k == pipe ]] && name="redis -c 4 -P 16 (req/s)"
  printf '%-28s %12s %12s %7.2fx\n' "$name" "$o" "$i" "$(awk -v a="$i" -v b="$o" 'BEGIN { print (b > 0 ? a / b : 0) }')"
done
echo
BPFMGR_PLUGIN_PATH=$plugins "$bpfmgr" status ops --pin-root "$pins" | grep -E "service|auto_|samples|queue|learn" || true
BPFMGR_PLUGIN_PATH=$plugins "$bpfmgr" status msg --pin-root "$pins" | grep -E "redirected|passed|queue|samples" || true
