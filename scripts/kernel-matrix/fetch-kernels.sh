#!/usr/bin/env bash
# Downloads Debian's stock kernels into the kernel cache without touching the
# host's apt state: a private APT_CONFIG keeps sources, lists and the package
# cache under a scratch directory inside the cache.
#
#   scripts/kernel-matrix/fetch-kernels.sh [6.1] [6.12] [5.10]   (default: all)
#
# Layout: $BPFMGR_KERNEL_CACHE/<series>/{vmlinuz,release,lib/modules/<release>}
# plus <series>/initrd-modules/ (the few modules the initramfs loads itself).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

series=("$@")
((${#series[@]})) || series=(6.1 6.12 5.10)

ensure_host_packages
mkdir -p "$KCACHE"
chmod 755 "$KCACHE"
scratch="$KCACHE/.apt"
mkdir -p "$scratch"/{lists/partial,cache/archives/partial,etc}

# Archive URIs as the host has them (its mirror may be a proxy or snapshot).
uri_of() { # suite-substring -> first URI whose stanza lists a matching suite
  awk -v want="$1" '
    /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i ~ want) {print u; exit}}
  ' /etc/apt/sources.list.d/debian.sources
}
main_uri=$(uri_of '^bookworm$'); sec_uri=$(uri_of 'security')
main_uri=${main_uri:-http://deb.debian.org/debian}
sec_uri=${sec_uri:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$scratch/etc/sources.list" <<SRC
deb [signed-by=$keyring] $main_uri bookworm main
deb [signed-by=$keyring] $sec_uri bookworm-security main
deb [signed-by=$keyring] $main_uri bookworm-backports main
deb [signed-by=$keyring] $main_uri bullseye main
deb [signed-by=$keyring] $sec_uri bullseye-security main
SRC
cat > "$scratch/etc/apt.conf" <<CONF
Dir::Etc::sourcelist "$scratch/etc/sources.list";
Dir::Etc::sourceparts "-";
Dir::State::Lists "$scratch/lists";
Dir::State::status "/dev/null";
Dir::Cache "$scratch/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Architecture "amd64";
APT::Sandbox::User "root";
CONF
export APT_CONFIG="$scratch/etc/apt.conf"
apt-get update -qq

# The newest package whose name matches: the names carry the ABI/upstream
# version (6.1.0-57, 6.12.118+deb12), which sort -V orders.
newest_pkg() {
  apt-cache --names-only search "$1" | awk '{print $1}' | grep -E "$1" | sort -V | tail -1
}

# Modules the initramfs loads before the root share exists; everything else
# autoloads from the bound module tree. modprobe resolves their dependencies
# in load order, so the list survives modules being split or built in.
initrd_modules=(virtio_pci 9pnet_virtio 9p overlay)

# The uncompressed kernel, when it has a PVH entry (Xen ELF note 18): QEMU
# boots that directly, skipping the bzImage's self-decompression, which
# under TCG costs tens of seconds per boot. Absent: run-in-kernel.sh boots
# the bzImage.
extract_vmlinux() {
  local bz=$1 out=$2 magic dec off
  for magic in xz zstd gzip; do
    case $magic in
      xz) m='\xfd\x37\x7a\x58\x5a\x00'; dec=(xz -dcq) ;;
      zstd) m='\x28\xb5\x2f\xfd'; dec=(zstd -dcq) ;;
      gzip) m='\x1f\x8b\x08'; dec=(gzip -dcq) ;;
    esac
    # The payload follows the setup code; the first match is it.
    off=$(LC_ALL=C grep -obUaP "$m" "$bz" | head -1 | cut -d: -f1)
    [[ -n $off ]] || continue
    # The decompressors complain about the bzImage's trailer: ignore that,
    # check the result instead.
    tail -c +$((off + 1)) "$bz" | "${dec[@]}" > "$out" 2>/dev/null || true
    if [[ $(head -c 4 "$out" | od -An -c | tr -d ' ') == 177ELF ]] &&
       readelf -n "$out" 2>/dev/null | grep -q 'Xen.*(0x00000012)'; then
      return 0
    fi
  done
  rm -f "$out"
  return 1
}

fetch_one() {
  local s=$1 re pkg dir rel deb
  case $s in
    6.1) re='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
    6.12) re='^linux-image-6\.12\.[0-9]+\+(bpo|deb12)-amd64$' ;;
    5.10) re='^linux-image-5\.10\.0-[0-9]+-amd64$' ;;
    *) die "unknown series $s (6.1, 6.12, 5.10)" ;;
  esac
  pkg=$(newest_pkg "$re")
  [[ -n $pkg ]] || die "no package matches $re"
  dir="$KCACHE/$s"
  if [[ -f $dir/package && $(cat "$dir/package") == "$pkg" && -f $dir/vmlinuz ]]; then
    # Atomically: a guest may be booting from this cache right now.
    if [[ ! -f $dir/vmlinux ]] && extract_vmlinux "$dir/vmlinuz" "$dir/.vmlinux.tmp"; then
      mv "$dir/.vmlinux.tmp" "$dir/vmlinux"
    fi
    log "$s: $pkg already cached"; return 0
  fi
  log "$s: downloading $pkg"
  local tmp; tmp=$(mktemp -d "$KCACHE/.fetch.XXXXXX")
  (cd "$tmp" && apt-get download -qq "$pkg")
  deb=$(ls "$tmp"/*.deb)
  dpkg -x "$deb" "$tmp/root"
  rel=$(ls "$tmp/root/lib/modules")
  mkdir -p "$tmp/out/lib/modules"
  mv "$tmp/root/lib/modules/$rel" "$tmp/out/lib/modules/"
  cp "$tmp/root/boot/vmlinuz-$rel" "$tmp/out/vmlinuz"
  cp "$tmp/root/boot/config-$rel" "$tmp/out/config" 2>/dev/null || true
  local m="$tmp/out/lib/modules/$rel"
  # Debian compresses modules (xz on 5.10/6.1, xz or zstd later); busybox's
  # insmod and a kernel without in-kernel decompression need plain .ko, so
  # decompress the whole tree once (a few hundred MB, cached).
  find "$m" -name '*.ko.xz' -print0 | xargs -0 -r -n 64 -P 2 xz -d -q
  find "$m" -name '*.ko.zst' -print0 | xargs -0 -r -n 64 -P 2 zstd -d -q --rm
  depmod -b "$tmp/out" "$rel"
  # The initramfs's own modules, in load order.
  mkdir -p "$tmp/out/initrd-modules"
  local i=0 f
  while read -r f; do
    i=$((i + 1)); cp "$f" "$tmp/out/initrd-modules/$(printf %02d "$i")-$(basename "$f")"
  done < <(for mod in "${initrd_modules[@]}"; do
             modprobe -d "$tmp/out" -S "$rel" --show-depends "$mod"
           done | awk '$1 == "insmod" && !seen[$2]++ {print $2}')
  extract_vmlinux "$tmp/out/vmlinuz" "$tmp/out/vmlinux" || log "$s: no PVH entry, guests boot the bzImage"
  echo "$rel" > "$tmp/out/release"
  echo "$pkg" > "$tmp/out/package"
  rm -rf "$dir"
  mv "$tmp/out" "$dir"
  rm -rf "$tmp"
  log "$s: $rel ready in $dir"
}

for s in "${series[@]}"; do fetch_one "$s"; done
