#!/usr/bin/env bash
# The systemd unit as `cmake --install` writes it (into a temporary
# prefix): systemd-analyze verify accepts it, it runs the installed binary
# on the installed manifest, as Type=notify, after local filesystems, with
# Restart=on-failure. Nothing is started. Usage: unit_test.sh BUILD_DIR
set -euo pipefail
build=$1
prefix=$(mktemp -d /tmp/bpfmgr-unit-test-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" --component runtime > /dev/null
unit=$prefix/lib/systemd/system/bpfmgr.service
systemd-analyze verify "$unit"
grep -qx "ExecStart=$prefix/bin/bpfmgr serve $prefix/etc/bpfmgr/manifest.toml" "$unit"
grep -qx 'Type=notify' "$unit"
grep -qx 'After=local-fs.target' "$unit"
grep -qx 'Restart=on-failure' "$unit"
"$prefix/bin/bpfmgr" validate "$prefix/etc/bpfmgr/manifest.toml"
echo "unit: systemd-analyze verify passed on $unit"
