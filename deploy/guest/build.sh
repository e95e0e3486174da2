#!/usr/bin/env bash
# Build a tiny Linux guest for vhost-user tests: Debian's guest kernel and a busybox initramfs.
# Everything comes from Debian packages (apt); nothing is downloaded from elsewhere.
#
#   deploy/guest/build.sh OUTDIR      → OUTDIR/vmlinuz, OUTDIR/initrd.gz (kept if already built)
#
# The guest's /init loads virtio-net (modular in Debian's kernel, loaded in dependency order: no
# kmod here), sets eth0 up with the address from the kernel command line (vnic.ip=A.B.C.D/N),
# prints VNIC-GUEST-READY on the console and then runs a shell on it.
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ]; then
  exit 0
fi
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx cpio || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "guest: installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# linux-image-amd64 is a metapackage: fetch the kernel it names, without installing it.
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "guest: no kernel package behind linux-image-amd64" >&2; exit 1; }
(cd "$work" && apt-get download -q "$kpkg" >/dev/null)
dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/k"
kver=${kpkg#linux-image-}
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
cp /bin/busybox "$root/bin/busybox"
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
for m in $mods; do
  f=$(find "$work/k/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "guest: module $m not in $kpkg" >&2; exit 1; }
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -dqc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done
cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $mods; do insmod /lib/modules/\$m.ko 2>/dev/null; done
ip=\$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^vnic.ip=//p')
i=0; while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
ip link set lo up; ip link set eth0 up
[ -n "\$ip" ] && ip addr add "\$ip" dev eth0
echo VNIC-GUEST-READY \$(cat /sys/class/net/eth0/address)
exec setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
INIT
chmod +x "$root/init"
(cd "$root" && find . | /bin/busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -9) > "$out/initrd.gz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
echo "guest: $out/vmlinuz ($kpkg), $out/initrd.gz ($(du -k "$out/initrd.gz" | cut -f1) KiB)"
