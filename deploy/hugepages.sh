#!/usr/bin/env bash
# Reserve 2 MiB hugepages and mount hugetlbfs when we can. Never fatal: vnicd, its tests and the
# demo fall back to --no-huge when the host has none.
want=${VNIC_HUGEPAGES:-1024}
[ "$(id -u)" = 0 ] || { echo "hugepages: not root, leaving the host as it is"; exit 0; }
cur=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
if [ "$cur" -lt "$want" ]; then
  echo "$want" > /proc/sys/vm/nr_hugepages 2>/dev/null || echo "hugepages: cannot reserve $want pages"
fi
if ! grep -q ' hugetlbfs ' /proc/mounts; then
  mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null \
    || echo "hugepages: cannot mount hugetlbfs (will run with --no-huge)"
fi
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
echo "hugepages: ${free:-0} free 2 MiB pages"
exit 0
