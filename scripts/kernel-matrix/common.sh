# Shared by the kernel-matrix scripts (sourced, not run).
# The kernel cache: shared by everyone on this machine, root-owned.
KCACHE=${BPFMGR_KERNEL_CACHE:-/work/kernels}
# One guest at a time on this machine: a guest with -smp 2 fills both CPUs.
# In /run, writable by root only: a lock file in a world-writable directory
# could be a planted symlink.
KLOCK=${BPFMGR_KERNEL_LOCK:-/run/bpfmgr-kernel-matrix.lock}
# Where the first snapshot of these scripts (2026-12-04) locked; also taken,
# first, while such runs may still be around, and only when it is a plain
# root-owned file.
KLOCK_LEGACY=/run/lock/bpfmgr-kernel-matrix.lock

log() { printf '[kernel-matrix] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 125; }

# Debian's packages only; a no-op when they are there.
ensure_host_packages() {
  local p missing=()
  for p in qemu-system-x86 busybox-static cpio xz-utils zstd kmod binutils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2; }
}
