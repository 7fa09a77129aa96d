#!/usr/bin/env bash
# An in-place upgrade of the bpfmgr package while serve runs, in a private
# mount namespace (overlays over /usr, /etc, /var and a tmpfs /run: dpkg's
# database and the installed files vanish with it; other processes on the
# machine never see the package):
#  1. `cpack -G DEB` gives version N; version N+1 is the same package with a
#     higher version and different plugin files (an ELF note added), as a
#     rebuild would give;
#  2. dpkg -i N: the maintainer scripts reload systemd and neither enable
#     nor start the service (systemctl and deb-systemd-invoke are stand-ins
#     that record their calls; /run/systemd/system exists);
#  3. serve runs the installed binary on a manifest with probes enabled;
#  4. dpkg -i N+1: postinst asks for try-restart, which the stand-in does as
#     systemd would (TERM, start again); the new serve runs the new plugin
#     (its sha256 in the state record), the pins stayed throughout and the
#     maps are the same maps (ids kept).
# Usage: upgrade_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
tmp=$(mktemp -d /tmp/bpfmgr-upgrade-test-XXXXXX)
pin_root=/sys/fs/bpf/bpfmgr-scratch-upgrade-$$
# Every way out (a failed check, a signal, ctest's timeout): the serve this
# test started is stopped (TERM, then KILL), its pins removed, $tmp deleted.
stop_serve() {
  local pid
  pid=$(cat "$tmp/serve.pid" 2>/dev/null) || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "serve $pid ignored TERM for 10s; killing it"
  kill -KILL "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
inner=
cleanup() {
  # The namespace's whole process group first (its shell, a dpkg whose
  # postinst would start serve again, serve), then serve until it is gone.
  if [[ -n $inner ]]; then
    kill -TERM -- "-$inner" 2>/dev/null
    wait "$inner" 2>/dev/null
  fi
  stop_serve
  [[ -d $pin_root ]] && "$build/bin/bpfmgr" unpin --pin-root "$pin_root" --quiet 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
(cd "$build" && cpack -G DEB -B "$tmp/pkg" > "$tmp/cpack.log") || { cat "$tmp/cpack.log"; exit 1; }
v1=$(ls "$tmp"/pkg/bpfmgr_*.deb)
version=$(dpkg-deb -f "$v1" Version)
dpkg-deb -R "$v1" "$tmp/v2"
sed -i "s/^Version: .*/Version: $version+rebuild1/" "$tmp/v2/DEBIAN/control"
echo "rebuilt for the upgrade test" > "$tmp/note"
for so in "$tmp"/v2/usr/lib/bpfmgr/plugins/*.so; do
  objcopy --add-section .note.bpfmgr-rebuild="$tmp/note" "$so"
done
( cd "$tmp/v2" && find usr etc -type f -exec md5sum {} + > DEBIAN/md5sums )
dpkg-deb --root-owner-group -b "$tmp/v2" "$tmp/bpfmgr_v2.deb" > /dev/null
dpkg --compare-versions "$(dpkg-deb -f "$tmp/bpfmgr_v2.deb" Version)" gt "$version"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
set +e
# In the background and waited for, so that a signal to this script runs
# its trap at once (bash runs traps only after a foreground command ends);
# in a process group of its own, so the trap can end all of it.
setsid unshare --mount --propagation private -- bash -euo pipefail -c '
tmp=$1 v1=$2 v2=$3 port=$4 pin_root=$5
# The serve started in here is stopped however this script ends (the outer
# cleanup does it again for a kill of this shell).
stop() {
  local pid
  pid=$(cat "$tmp/serve.pid" 2>/dev/null) && kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}
trap stop EXIT
for d in usr etc var; do
  mkdir -p "$tmp/ov/$d/upper" "$tmp/ov/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$tmp/ov/$d/upper,workdir=$tmp/ov/$d/work" "/$d"
done
mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system /run/lock
if dpkg-query -W -f="\${Status}" bpfmgr 2>/dev/null | grep -q installed; then
  echo "FAIL: bpfmgr is installed on this machine; not testing over it"; exit 1
fi
# Stand-ins for systemd: record calls; try-restart restarts our serve.
cat > /usr/local/sbin/systemctl <<EOS
#!/bin/sh
echo "systemctl \$*" >> $tmp/calls
EOS
cat > /usr/local/sbin/deb-systemd-invoke <<EOS
#!/bin/sh
echo "deb-systemd-invoke \$*" >> $tmp/calls
if [ "\$1" = try-restart ] && [ -f $tmp/serve.pid ] && kill -0 \$(cat $tmp/serve.pid); then
  kill -TERM \$(cat $tmp/serve.pid)
  while kill -0 \$(cat $tmp/serve.pid) 2>/dev/null; do sleep 0.1; done
  $tmp/start-serve
fi
EOS
cat > "$tmp/start-serve" <<EOS
#!/bin/sh
env -u BPFMGR_PLUGIN_PATH /usr/bin/bpfmgr serve $tmp/manifest.toml --pin-root $pin_root \
  --metrics-address 127.0.0.1:$port --interval 300 >> $tmp/serve.log 2>&1 &
echo \$! > $tmp/serve.pid
EOS
chmod 755 /usr/local/sbin/systemctl /usr/local/sbin/deb-systemd-invoke "$tmp/start-serve"
export PATH=/usr/local/sbin:$PATH
ready() {
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$port/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "FAIL: serve not ready"; cat "$tmp/serve.log"; return 1
}
# --- install N
dpkg -i "$v1" > "$tmp/dpkg1.log" 2>&1 || { cat "$tmp/dpkg1.log"; exit 1; }
echo "install calls: $(tr "\n" ";" < "$tmp/calls")"
grep -qx "systemctl --system daemon-reload" "$tmp/calls"
! grep -Eq "enable|start" "$tmp/calls" || { echo "FAIL: install enabled or started the service"; exit 1; }
: > "$tmp/calls"
sed -e "s/^enabled = false$/enabled = true/" /etc/bpfmgr/manifest.toml > "$tmp/manifest.toml"
"$tmp/start-serve"
ready
status() { /usr/bin/bpfmgr status --pin-root "$pin_root" --json probes; }
status > "$tmp/before.json"
pid1=$(cat "$tmp/serve.pid")
# --- upgrade to N+1 while serve runs
dpkg -i "$v2" > "$tmp/dpkg2.log" 2>&1 || { cat "$tmp/dpkg2.log"; exit 1; }
echo "upgrade calls: $(tr "\n" ";" < "$tmp/calls")"
grep -qx "deb-systemd-invoke try-restart bpfmgr.service" "$tmp/calls"
! grep -Eq "enable" "$tmp/calls"
[ "$(cat "$tmp/serve.pid")" != "$pid1" ] || { echo "FAIL: serve not restarted"; exit 1; }
ready
status > "$tmp/after.json"
kill -TERM "$(cat "$tmp/serve.pid")"
while kill -0 "$(cat "$tmp/serve.pid")" 2>/dev/null; do sleep 0.1; done
new_sha=$(sha256sum /usr/lib/bpfmgr/plugins/bpfmgr-probes.so | cut -d" " -f1)
python3 - "$tmp/before.json" "$tmp/after.json" "$new_sha" <<EOP
import json, sys
b = json.load(open(sys.argv[1]))["instances"][0]
a = json.load(open(sys.argv[2]))["instances"][0]
sha = sys.argv[3]
def maps(i): return {m["name"]: m.get("id") for m in i["maps"] if "shared_from" not in m}
def progs(i): return {p["name"]: p.get("id") for p in i["programs"]}
assert a.get("plugin_sha256") == sha, ("the new plugin does not run", a.get("plugin_sha256"), sha)
assert b.get("plugin_sha256") != sha, "the old plugin had the new content"
assert maps(a) == maps(b), ("maps not kept", maps(b), maps(a))
assert set(progs(a).values()) .isdisjoint(progs(b).values()), "programs not reloaded"
assert "drift" not in a and not any("error" in l for l in a["links"]), a
print("upgrade: %s -> new plugin sha %s..., %d maps kept (same ids), %d programs reloaded, links live"
      % (b.get("plugin_version"), sha[:12], len(maps(a)), len(progs(a))))
EOP
grep -q "updated \[probes\]" "$tmp/serve.log" || { echo "FAIL: no update logged"; cat "$tmp/serve.log"; exit 1; }
/usr/bin/bpfmgr unpin --pin-root "$pin_root" --quiet
' upgrade "$tmp" "$v1" "$tmp/bpfmgr_v2.deb" "$port" "$pin_root" &
inner=$!
wait "$inner"
rc=$?
inner=
set -e
stop_serve
[[ $rc == 0 ]] || { echo "FAIL: upgrade test ($rc)"; tail -30 "$tmp/serve.log" 2>/dev/null; exit 1; }
echo "upgrade test passed: $(basename "$v1") -> $(basename "$tmp/bpfmgr_v2.deb")"
