#!/usr/bin/env bash
# `bpfmgr serve` with the capabilities bpfmgr.service grants and nothing
# else (setpriv: bounding set CAP_BPF CAP_PERFMON CAP_NET_ADMIN, no new
# privileges), as the unit runs it: the shipped manifest with its probes
# enabled, plus a sockops instance on a cgroup of its own (cgroup attach),
# under a private pin root. Passes when every instance comes up, a removed
# pin is repaired and the process really had no other capability.
# Usage: capabilities_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
bin=$build/bin/bpfmgr
tmp=$(mktemp -d /tmp/bpfmgr-caps-test-XXXXXX)
pin_root=/sys/fs/bpf/bpfmgr-scratch-caps-$$
cg_root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
cg=$cg_root/bpfmgr-scratch-caps-$$
serve_pid=
cleanup() {
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  [[ -d $pin_root ]] && "$bin" unpin --pin-root "$pin_root" --quiet
  rmdir "$cg" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mkdir "$cg"
# The unit's set, read from the unit itself: one rule in one place.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$src/deploy/systemd/bpfmgr.service.in")
[[ $caps == "CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_ADMIN" ]] || { echo "FAIL: unexpected set: $caps"; exit 1; }
bounding=-all
for c in $caps; do c=${c#CAP_}; bounding+=",+${c,,}"; done
{
  sed -e "s#^pin_root = .*#pin_root = \"$pin_root\"#" -e 's/^enabled = false$/enabled = true/' \
    "$src/deploy/bpfmgr.toml"
  printf '\n[[instance]]\nname = "bypass-ops"\nplugin = "sockops"\n[instance.options]\ncgroup = "%s"\n' \
    "${cg#$cg_root/}"
} > "$tmp/manifest.toml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BPFMGR_PLUGIN_PATH=$build/lib/bpfmgr/plugins \
  setpriv --bounding-set "$bounding" --inh-caps=-all --no-new-privs -- \
  "$bin" serve "$tmp/manifest.toml" --metrics-address "127.0.0.1:$port" --interval 300 \
  > "$tmp/serve.log" 2>&1 &
serve_pid=$!
ready=
for _ in $(seq 1 1200); do  # 2 minutes: slow guests (QEMU TCG) too
  if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz") == 200 ]]; then
    ready=1; break
  fi
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $ready ]]; then
  echo "FAIL: not ready under $caps"; cat "$tmp/serve.log"
  curl -s "http://127.0.0.1:$port/readyz" || true; exit 1
fi
# What the process held: exactly the three (CapEff/CapBnd as hex masks).
want=$(( (1 << 39) | (1 << 38) | (1 << 12) | (1 << 21) ))  # CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN
for f in CapEff CapBnd; do
  have=$(awk -v f="$f:" '$1 == f { print $2 }' "/proc/$serve_pid/status")
  (( 16#$have == want )) || { echo "FAIL: $f is $have"; exit 1; }
done
grep -q '^NoNewPrivs:.*1' "/proc/$serve_pid/status"
metrics=$(curl -fsS "http://127.0.0.1:$port/metrics")
for i in probes bypass-ops; do
  grep -qx "bpfmgr_instance_up{instance_name=\"$i\"} 1" <<< "$metrics" ||
    { echo "FAIL: $i not up"; echo "$metrics" | grep instance_up; exit 1; }
done
bpftool cgroup show "$cg" | grep -q sock_ops || { echo "FAIL: nothing attached to $cg"; exit 1; }
# A repair under the same limits.
rm -f "$pin_root"/probes/links/*
for _ in $(seq 1 600); do
  [[ -n $(ls "$pin_root/probes/links") ]] &&
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz") == 200 ]] && break
  sleep 0.1
done
[[ -n $(ls "$pin_root/probes/links") ]] || { echo "FAIL: not repaired"; cat "$tmp/serve.log"; exit 1; }
kill -TERM "$serve_pid"; wait "$serve_pid"; serve_pid=
echo "capabilities: serve ran with only $caps (no new privileges): probes and sockops up, repaired"
