#!/usr/bin/env bash
# The Debian packages, as an administrator gets them: `cpack -G DEB` in the
# build tree, `apt-get install ./bpfmgr_*.deb ./bpfmgr-dev_*.deb` on this
# machine, the installed /usr/bin/bpfmgr run (--version, plugins, validate
# of the shipped /etc/bpfmgr/manifest.toml), the installed unit checked with
# systemd-analyze (not started), the example plugin built against the
# installed SDK, then `apt-get purge` leaving nothing behind.
# Refuses to run when a bpfmgr package is already installed (not ours to
# remove). Usage: package_test.sh BUILD_DIR
#
# Installing puts plugins in /usr/lib/bpfmgr/plugins, which every bpfmgr on
# the machine then prefers over BPFMGR_PLUGIN_PATH: other test runs sharing
# this machine would fail meanwhile. So it runs in CI (CI=true, one run per
# machine) or when asked (BPFMGR_SYSTEM_TESTS=1), and is skipped otherwise.
set -euo pipefail
build=$1
if [[ ${CI:-} != true && ${BPFMGR_SYSTEM_TESTS:-} != 1 ]]; then
  echo "skipped: installs system-wide; runs with CI=true or BPFMGR_SYSTEM_TESTS=1"
  exit 77
fi
# One package test at a time on a machine.
exec 9> /run/lock/bpfmgr-package-test.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
if dpkg-query -W -f='${Status}' bpfmgr 2>/dev/null | grep -q installed; then
  echo "FAIL: a bpfmgr package is already installed here; not touching it"; exit 1
fi
out=$(mktemp -d /tmp/bpfmgr-package-test-XXXXXX)
installed=
cleanup() {
  [[ -n $installed ]] && apt-get purge -y -qq bpfmgr-dev bpfmgr > /dev/null 2>&1
  rm -rf "$out"
}
trap cleanup EXIT

(cd "$build" && cpack -G DEB -B "$out" > "$out/cpack.log") ||
  { cat "$out/cpack.log"; exit 1; }
deb=$(ls "$out"/bpfmgr_*.deb) dev=$(ls "$out"/bpfmgr-dev_*.deb)
ls -l "$deb" "$dev"
dpkg-deb -c "$deb" > "$out/runtime.list"
dpkg-deb -c "$dev" > "$out/dev.list"
grep -q ' ./usr/lib/bpfmgr/plugins/bpfmgr-probes.so$' "$out/runtime.list"
grep -q ' ./usr/lib/systemd/system/bpfmgr.service$' "$out/runtime.list"
grep -q ' ./etc/bpfmgr/manifest.toml$' "$out/runtime.list"
grep -q ' ./usr/include/bpfmgr/plugin.hpp$' "$out/dev.list"
grep -q ' ./usr/include/bpfmgr/bench/measure.hpp$' "$out/dev.list"
grep -q ' ./usr/include/bpfmgr/bench.hpp$' "$out/dev.list"
# lintian (Debian's): no errors; every tag it prints is shown.
lintian --fail-on error --no-tag-display-limit "$deb" "$dev" | tee "$out/lintian.log" ||
  { echo "FAIL: lintian reports errors"; exit 1; }
echo "lintian: $(grep -c '^E:' "$out/lintian.log" || true) error(s), $(grep -c '^W:' "$out/lintian.log" || true) warning(s)"
grep -q ' postinst' <<< "$(dpkg-deb -I "$deb")" || { echo "FAIL: no postinst"; exit 1; }
grep -q ' ./usr/share/man/man8/bpfmgr.8.gz$' "$out/runtime.list"
grep -q ' ./usr/share/man/man5/bpfmgr.toml.5.gz$' "$out/runtime.list"
grep -q ' ./usr/share/doc/bpfmgr/safety.md$' "$out/runtime.list"
grep -q ' ./usr/share/doc/bpfmgr/copyright$' "$out/runtime.list"
# No compiler or test tool in the runtime package's dependencies.
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
! grep -Eq 'clang|gcc|gtest|prometheus' <<< "$depends"

installed=1
apt-get install -y -qq "$deb" "$dev" > "$out/apt.log" 2>&1 || { cat "$out/apt.log"; exit 1; }
# The installed binary finds the installed plugins by itself.
env -u BPFMGR_PLUGIN_PATH /usr/bin/bpfmgr --version
env -u BPFMGR_PLUGIN_PATH /usr/bin/bpfmgr plugins --json > "$out/plugins.json"
for p in sockops sockmsg tcpint probes; do
  grep -q "\"path\": \"/usr/lib/bpfmgr/plugins/bpfmgr-$p.so\"" "$out/plugins.json" ||
    { echo "FAIL: plugin $p not found in /usr/lib/bpfmgr/plugins"; cat "$out/plugins.json"; exit 1; }
done
/usr/bin/bpfmgr validate /etc/bpfmgr/manifest.toml
/usr/bin/bpfmgr serve --help | grep -q -- '--metrics-address'
systemd-analyze verify /usr/lib/systemd/system/bpfmgr.service
grep -qx 'ExecStart=/usr/bin/bpfmgr serve /etc/bpfmgr/manifest.toml' \
  /usr/lib/systemd/system/bpfmgr.service
test -f /usr/lib/cmake/bpfmgr/bpfmgrConfig.cmake
# The -dev package alone builds a plugin and its harness: the example,
# against /usr only (no build tree on the include or module path).
example=$(cd "$(dirname "$0")/../../examples/execcount" && pwd)
cmake -S "$example" -B "$out/example" -DCMAKE_PREFIX_PATH=/usr > "$out/example.log" 2>&1 &&
  cmake --build "$out/example" >> "$out/example.log" 2>&1 ||
  { echo "FAIL: the example does not build against the installed SDK"; cat "$out/example.log"; exit 1; }
test -f "$out/example/bpfmgr-execcount.so"
test -x "$out/example/bench_execcount"

apt-get purge -y -qq bpfmgr-dev bpfmgr > "$out/apt.log" 2>&1 || { cat "$out/apt.log"; exit 1; }
installed=
for p in /usr/bin/bpfmgr /usr/lib/bpfmgr /etc/bpfmgr /usr/lib/systemd/system/bpfmgr.service \
         /usr/include/bpfmgr /usr/lib/cmake/bpfmgr /usr/share/doc/bpfmgr; do
  [[ ! -e $p ]] || { echo "FAIL: $p left after purge"; exit 1; }
done
! dpkg-query -W bpfmgr > /dev/null 2>&1
echo "package: $(stat -c %s "$deb") bytes ($(basename "$deb")), $(stat -c %s "$dev") bytes ($(basename "$dev")); installed, ran, purged cleanly"
