#!/bin/bash
# Build the Debian package from a staged tree (dpkg-deb): the binaries, the systemd units, the
# tmpfiles.d entry, a commented default config, bash completion and man pages generated from
# the binaries' own clap definitions, and Depends: computed from the DPDK libraries they link.
#   deploy/deb/build.sh [--bin-dir target/release] [--out target/deb]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir=target/release
out=target/deb
while [ $# -gt 0 ]; do
    case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "build.sh: unknown argument $1 (--bin-dir DIR, --out DIR)" >&2; exit 2 ;;
    esac
done
bins=(vnicd vnicctl vnic-client vnic-bench vnic-gen vnic-demo)
for b in "${bins[@]}"; do
    [ -x "$bin_dir/$b" ] || { echo "build.sh: $bin_dir/$b missing (cargo build --release --workspace)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage"/{DEBIAN,usr/bin,usr/lib/vnicd,usr/lib/tmpfiles.d,lib/systemd/system,etc/vnicd,etc/default} \
    "$stage"/usr/share/{bash-completion/completions,man/man1,man/man8,doc/vnicd}

for b in "${bins[@]}"; do
    install -m 0755 --strip "$bin_dir/$b" "$stage/usr/bin/$b"
done
for b in vnicd vnicctl vnic-client vnic-bench; do
    "$bin_dir/$b" --generate-completions bash >"$stage/usr/share/bash-completion/completions/$b"
    sec=1; [ "$b" = vnicd ] && sec=8
    "$bin_dir/$b" --generate-man | gzip -9n >"$stage/usr/share/man/man$sec/$b.$sec.gz"
done
install -m 0644 deploy/systemd/vnicd.service deploy/systemd/vnicd-vfs@.service deploy/systemd/vnicd-vfs.target \
    "$stage/lib/systemd/system/"
install -m 0755 deploy/systemd/vnicd-vfs "$stage/usr/lib/vnicd/vnicd-vfs"
install -m 0644 deploy/systemd/vnicd.tmpfiles "$stage/usr/lib/tmpfiles.d/vnicd.conf"
install -m 0644 deploy/systemd/vnicd.default "$stage/etc/default/vnicd"
install -m 0644 deploy/deb/vnicd.json "$stage/etc/vnicd/vnicd.json"
install -d "$stage/etc/vnicd/vfs"
gzip -9n <README.md >"$stage/usr/share/doc/vnicd/README.md.gz"
cat >"$stage/usr/share/doc/vnicd/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vnicd
Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY

# Depends: the package of every shared library the binaries link (DPDK's runtime libraries,
# libc), plus the plugins the EAL loads at run time (mempool ring, PCI bus, memif).
# One dpkg -S for all of them: each call reads dpkg's whole file database.
libs=$(for b in "${bins[@]}"; do objdump -p "$stage/usr/bin/$b" | awk '/NEEDED/ {print $2}'; done | sort -u)
owners=$(dpkg -S $(for l in $libs; do echo "*/$l"; done) 2>/dev/null | grep ":$arch: ")
declare -A pkgs
for lib in $libs; do
    p=$(echo "$owners" | grep "/$lib\$" | head -1 | cut -d: -f1)
    [ -n "$p" ] || { echo "build.sh: no package provides $lib" >&2; exit 1; }
    pkgs[$p]=1
done
for p in librte-mempool-ring23 librte-bus-pci23 librte-net-memif23; do pkgs[$p]=1; done
depends=$(for p in "${!pkgs[@]}"; do
    case $p in librte-*) echo "$p (>= 22.11)" ;; *) echo "$p" ;; esac
done | sort | paste -sd, | sed 's/,/, /g')
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)

cat >"$stage/DEBIAN/control" <<CTRL
Package: vnicd
Version: $version
Architecture: $arch
Maintainer: vnicd developers <vnicd@localhost>
Installed-Size: $size
Depends: $depends
Recommends: dpdk, driverctl
Suggests: dpdk-dev, prometheus, qemu-system-x86, openvswitch-switch-dpdk
Section: net
Priority: optional
Homepage: https://localhost/vnicd
Description: virtual NICs backed by SR-IOV VFs, switched by a DPDK poll-mode core
 vnicd gives clients (VMs over vhost-user, containers over memif, DPDK processes over
 shared memory) virtual NICs whose identity survives failover between up to six SR-IOV
 VFs and moves between hosts, the way PowerVM's vNIC does. A pinned DPDK core moves the
 packets; a control thread does login, health, failover, reloads and the admin socket.
 This package holds vnicd, vnicctl, vnic-client, vnic-bench (with vnic-gen and vnic-demo),
 the systemd units, bash completion and man pages.
CTRL
printf '/etc/vnicd/vnicd.json\n/etc/default/vnicd\n' >"$stage/DEBIAN/conffiles"
cat >"$stage/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    systemd-tmpfiles --create vnicd.conf >/dev/null 2>&1 || mkdir -p /run/vnicd
    # Not enabled or started: the config names this host's VFs first (see /etc/vnicd/vnicd.json).
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
POST
cat >"$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop vnicd.service || true
fi
PRERM
cat >"$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then rmdir /etc/vnicd/vfs /etc/vnicd 2>/dev/null || true; fi
POSTRM
chmod 0755 "$stage"/DEBIAN/{postinst,prerm,postrm}
deb=$out/vnicd_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "$deb"
