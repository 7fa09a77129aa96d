#!/usr/bin/env bash
# Boots one of Debian's stock kernels under QEMU and runs a command inside it,
# on this machine's own root filesystem (read-only, with a throw-away tmpfs
# overlay), from the same working directory; exits with the command's code.
#
#   scripts/kernel-matrix/run-in-kernel.sh [options] KERNEL -- CMD [ARG...]
#
# KERNEL: 6.1 | 6.12 | 5.10 (fetched into $BPFMGR_KERNEL_CACHE, default
# /work/kernels, on first use) or a directory laid out like the cache
# (vmlinuz, release, lib/modules/<release>, initrd-modules/).
# Options:
#   --timeout S       wall-clock limit for the guest (default $BPFMGR_GUEST_TIMEOUT or 1200)
#   --boot-timeout S  limit until the guest has its root mounted (default 300)
#   --mem SIZE        guest memory (default 2G)
#   --console FILE    keep the guest's kernel console log there
#   --timing FILE     write boot_s= (until the root is mounted) and run_s= there
#   --share DIR       make the host directory DIR writable in the guest, at the
#                     same path (repeatable): how results get out of the overlay
# Exit codes: the command's; 124 timeout; 125 the harness or the guest failed
# (the console's tail is printed).
# Only one guest runs at a time on this machine (a lock in /run): with -smp 2
# a guest fills both CPUs, so others wait for it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

timeout=${BPFMGR_GUEST_TIMEOUT:-1200}
boot_timeout=300
mem=2G
console_keep= timing_file=
shares=()
while (($#)); do
  case $1 in
    --timeout) timeout=$2; shift 2 ;;
    --boot-timeout) boot_timeout=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --console) console_keep=$2; shift 2 ;;
    --timing) timing_file=$2; shift 2 ;;
    --share) shares+=("$(realpath -e "$2")") || die "no directory $2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) die "KERNEL missing before --" ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
(($# >= 3)) && [[ $2 == -- ]] || die "usage: $0 [options] KERNEL -- CMD [ARG...]"
kernel=$1; shift 2
[[ $(id -u) == 0 ]] || die "needs root (the guest shares / as root; the command loads BPF)"

ensure_host_packages
case $kernel in
  */*) kdir=$(realpath -e "$kernel") || die "no kernel directory $kernel" ;;
  *) kdir=$KCACHE/$kernel
     [[ -f $kdir/vmlinuz ]] || "$here/fetch-kernels.sh" "$kernel" >&2
     kdir=$(realpath -e "$kdir") ;;
esac
[[ -f $kdir/vmlinuz && -f $kdir/release ]] || die "$kdir: no vmlinuz/release"
rel=$(cat "$kdir/release")
cwd=$(pwd -P)
case $cwd in /run|/run/*|/proc*|/sys*|/dev*) die "cannot run from $cwd (not the host's inside the guest)" ;; esac

# Private scratch: mktemp makes it 0700, so nothing in it is writable by others.
# A run killed by SIGKILL leaves its scratch (QEMU dies with it): sweep the
# ones of dead runs, only root's own directories.
tmp_root=${TMPDIR:-/tmp}
for d in "$tmp_root"/bpfmgr-guest.*; do
  [[ -d $d && ! -L $d && -O $d && -f $d/pid ]] || continue
  kill -0 "$(cat "$d/pid")" 2>/dev/null || rm -rf "$d"
done
work=$(mktemp -d "$tmp_root/bpfmgr-guest.XXXXXX")
echo $$ > "$work/pid"
qpid= tails=() lockpid=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e   # a failing kill or wait must not cut the cleanup short
  [[ -n $qpid ]] && kill -KILL "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  ((${#tails[@]})) && kill "${tails[@]}" 2>/dev/null
  [[ -n $lockpid ]] && kill "$lockpid" 2>/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# --- initramfs: static busybox, the share/overlay modules, /init -------------
mkdir -p "$work"/initrd/{bin,dev,proc,sys,modules,lower,rw,newroot} "$work/out"
cp /bin/busybox "$work/initrd/bin/busybox"
if [[ -d $kdir/initrd-modules ]]; then cp "$kdir"/initrd-modules/*.ko "$work/initrd/modules/" 2>/dev/null || true; fi
share_mounts=
for i in "${!shares[@]}"; do
  share_mounts+=$(printf 'mkdir -p /newroot%q && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share%d /newroot%q || fail "share %q"' \
    "${shares[$i]}" "$i" "${shares[$i]}" "${shares[$i]}")$'\n'
done
cat > "$work/initrd/init" <<INIT
#!/bin/busybox sh
# Stage 1 (PID 1): mount the host's / under a tmpfs overlay, then chroot into
# it as PID 1 itself: kthreadd shares PID 1's root, so module autoload then
# runs the host's modprobe against the bound module tree.
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "kernel-matrix init: \$*"; echo 125 > /newroot/run/kernel-matrix/rc 2>/dev/null; sync; poweroff -f; }
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in /modules/*.ko; do [ -e "\$m" ] && { insmod "\$m" || echo "insmod \$m failed"; }; done
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=512000 root /lower || fail "root share"
mount -t tmpfs -o mode=755 rw /rw && mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail overlay
n=/newroot
mount -t proc proc \$n/proc; mount -t sysfs sys \$n/sys; mount -t devtmpfs dev \$n/dev
mkdir -p \$n/dev/pts \$n/dev/shm
mount -t devpts -o newinstance,ptmxmode=666 devpts \$n/dev/pts; mount -t tmpfs -o mode=1777 shm \$n/dev/shm
mount -t tmpfs -o mode=755 run \$n/run
mkdir -p \$n/run/kernel-matrix \$n/run/lock
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out \$n/run/kernel-matrix || fail "out share"
mount -t bpf bpf \$n/sys/fs/bpf
mount -t cgroup2 cgroup2 \$n/sys/fs/cgroup
mount -t tracefs tracefs \$n/sys/kernel/tracing
mount -t debugfs debugfs \$n/sys/kernel/debug
mkdir -p \$n/lib/modules/$rel
mount -o bind \$n$kdir/lib/modules/$rel \$n/lib/modules/$rel || echo "no module tree: autoload off"
$share_mounts
echo "kernel-matrix: root ready (\$(cut -d' ' -f1 /proc/uptime)s)"
echo booted > \$n/run/kernel-matrix/booted
cd \$n && exec chroot . /bin/bash /run/kernel-matrix/stage2.sh
fail "chroot"
INIT
chmod 755 "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"

# --- stage 2 (PID 1 in the chroot, the host's bash): the command -------------
{
  echo '# generated by run-in-kernel.sh'
  # The caller's environment, so ctest and tests see what they would on the host.
  declare -px | grep -Ev '^declare -[a-zA-Z-]* (BASH[A-Z_]*|SHLVL|PWD|OLDPWD|_|SHELLOPTS|BASHOPTS|EUID|PPID|UID|TMPDIR|DISPLAY|SSH_[A-Z_]*|XDG_[A-Z_]*|INVOCATION_ID|JOURNAL_STREAM|NOTIFY_SOCKET)='
  printf 'export BPFMGR_IN_GUEST=1 BPFMGR_GUEST_KERNEL=%q\n' "$kernel"
  printf 'o=/run/kernel-matrix\n'
  # Loopback is down in a fresh kernel until someone brings it up (on the
  # host, systemd/ifupdown do): tests connect to 127.0.0.1 and ::1.
  printf 'ip link set lo up 2>/dev/null || /bin/busybox ip link set lo up\n'
  printf 'cd %q || { echo 125 > $o/rc; exit; }\n' "$cwd"
  # Not exec: PID 1 must outlive the command to write its exit code.
  printf '%q ' "$@"; printf '</dev/null >$o/stdout 2>$o/stderr\n'
  printf 'echo $? > $o/rc.tmp && mv $o/rc.tmp $o/rc\n'
  printf 'sync; /bin/busybox poweroff -f\n'
} > "$work/out/stage2.sh"
: > "$work/out/stdout"; : > "$work/out/stderr"

# --- the lock, then the guest ------------------------------------------------
if [[ -z ${BPFMGR_KERNEL_LOCK:-} && -f $KLOCK_LEGACY && ! -L $KLOCK_LEGACY && -O $KLOCK_LEGACY ]]; then
  exec 8< "$KLOCK_LEGACY"
  if ! flock -n 8; then log "waiting for the guest lock: $(tr '\n' ' ' < "$KLOCK_LEGACY")"; flock 8 & lockpid=$!; wait $lockpid; fi
fi
[[ ! -L $KLOCK ]] || die "$KLOCK is a symlink"
exec 9<> "$KLOCK"
if ! flock -n 9; then
  log "waiting for the guest lock: $(tr '\n' ' ' < "$KLOCK")"
  # In the background so a signal ends the wait at once (a foreground flock
  # would defer the trap); the lock belongs to the shared open file.
  flock 9 & lockpid=$!; wait $lockpid
fi
lockpid=
truncate -s 0 "$KLOCK"; printf 'pid %s since %s: %s %s\n' "$$" "$(date +%T)" "$kernel" "$*" > "$KLOCK"

console=$work/console.log
# The uncompressed PVH kernel boots faster under TCG (fetch-kernels.sh).
boot_image=$kdir/vmlinuz
[[ -f $kdir/vmlinux && ${BPFMGR_GUEST_BZIMAGE:-0} != 1 ]] && boot_image=$kdir/vmlinux
share_args=()
for i in "${!shares[@]}"; do
  share_args+=(-virtfs "local,path=${shares[$i]},mount_tag=share$i,security_model=none,multidevs=remap")
done
log "booting $rel ($kernel), timeout ${timeout}s: $*"
start=$SECONDS
# pdeathsig: QEMU dies with this script even when it is SIGKILLed.
setpriv --pdeathsig KILL -- qemu-system-x86_64 \
  -name bpfmgr-kernel-matrix -nodefaults -display none -no-reboot \
  -accel tcg,thread=multi -cpu max -m "$mem" -smp 2 \
  -kernel "$boot_image" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init random.trust_cpu=on" \
  -serial "file:$console" -monitor none \
  -virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$work/out,mount_tag=out,security_model=none,multidevs=remap" \
  "${share_args[@]}" </dev/null >"$work/qemu.log" 2>&1 &
qpid=$!
# Stream the command's output as it is written (the share is uncached).
setpriv --pdeathsig KILL -- tail -n +1 -F --pid="$qpid" -s 0.5 "$work/out/stdout" 2>/dev/null & tails+=($!)
setpriv --pdeathsig KILL -- tail -n +1 -F --pid="$qpid" -s 0.5 "$work/out/stderr" >&2 2>/dev/null & tails+=($!)

console_tail() {
  log "guest console (last 40 lines):"
  tail -n 40 "$console" >&2 2>/dev/null || true
  [[ -s $work/qemu.log ]] && { log "qemu:"; cat "$work/qemu.log" >&2; }
  return 0
}
result=
booted=
while kill -0 "$qpid" 2>/dev/null; do
  el=$((SECONDS - start))
  if [[ -z $booted && -e $work/out/booted ]]; then booted=$el; log "guest up in ${el}s"; fi
  if [[ -z $booted ]] && ((el > boot_timeout)); then
    log "guest did not boot within ${boot_timeout}s"; result=125; break
  fi
  if ((el > timeout)); then log "timeout after ${timeout}s"; result=124; break; fi
  sleep 0.5
done
if [[ -n $result ]]; then
  kill -KILL "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null || true; qpid=
else
  wait "$qpid" 2>/dev/null || true; qpid=
fi
wait "${tails[@]}" 2>/dev/null || true; tails=()
[[ -n $console_keep ]] && cp "$console" "$console_keep"
[[ -n $timing_file ]] && printf 'boot_s=%s\nrun_s=%s\n' "${booted:-?}" "$((SECONDS - start))" > "$timing_file"
if [[ -z $result ]]; then
  if [[ -f $work/out/rc ]]; then
    result=$(cat "$work/out/rc")
    log "guest done in $((SECONDS - start))s, exit $result"
  else
    log "guest stopped without an exit code"; result=125
  fi
fi
[[ -f $work/out/rc && $result != 125 ]] || console_tail
exit "$result"
