#!/usr/bin/env bash
# The systemd unit as `cmake --install` writes it (into a temporary
# prefix): systemd-analyze verify accepts it (its man: links resolve to the
# installed man pages), it runs the installed binary on the installed
# manifest, as Type=notify, after local filesystems, with
# Restart=on-failure, and `systemd-analyze security` rates its exposure at
# most 2.5. Nothing is started. Usage: unit_test.sh BUILD_DIR
set -euo pipefail
build=$1
prefix=$(mktemp -d /tmp/bpfmgr-unit-test-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" --component runtime > /dev/null
unit=$prefix/lib/systemd/system/bpfmgr.service
MANPATH=$prefix/share/man systemd-analyze verify "$unit"
score=$(systemd-analyze security --offline=yes "$unit" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.5) }' ||
  { systemd-analyze security --offline=yes "$unit"; echo "FAIL: exposure $score > 2.5"; exit 1; }
grep -qx 'CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_ADMIN' "$unit"
grep -qx 'ProtectSystem=strict' "$unit"
grep -qx 'ReadWritePaths=/sys/fs/bpf' "$unit"
grep -qx "ExecStart=$prefix/bin/bpfmgr serve $prefix/etc/bpfmgr/manifest.toml" "$unit"
grep -qx 'Type=notify' "$unit"
grep -qx 'After=local-fs.target' "$unit"
grep -qx 'Restart=on-failure' "$unit"
"$prefix/bin/bpfmgr" validate "$prefix/etc/bpfmgr/manifest.toml"
echo "unit: systemd-analyze verify passed on $unit; exposure $score"
