#!/bin/bash
# Interleaved A/B of vnicd builds on the net_null closed loop, vnicd alone (no testpmd): two
# vNICs on net_null0/1, in-core bounce clients, one data core on CPU 1. Prints the best and
# median busy cycles per forwarded frame of each binary (noise only ever slows a run down).
#   bench/scripts/null-ab.sh ROUNDS [LAUNCH] BIN...     e.g. 8 lcore /tmp/old/vnicd target/release/vnicd
set -eu
rounds=$1; shift
launch=lcore
case "${1:-}" in lcore|thread) launch=$1; shift ;; esac
dir=$(mktemp -d /tmp/vnic-null-ab.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/cfg.json" <<JSON
{"eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512},
 "data_cores": [{"core": 1, "launch": "$launch", "idle_sleep_us": 0}],
 "control_socket": "$dir/c.sock", "admin_socket": "$dir/a.sock", "stats_interval_ms": 60000,
 "vnics": [
  {"name": "vnic0", "mac": "02:00:00:00:00:01", "allow_spoofing": true,
   "backing": [{"name": "vf0", "devargs": "net_null0", "port_label": "p0"}]},
  {"name": "vnic1", "mac": "02:00:00:00:00:02", "allow_spoofing": true,
   "backing": [{"name": "vf1", "devargs": "net_null1", "port_label": "p1"}]}]}
JSON
one() {
  "$1" --config "$dir/cfg.json" --json-summary --inline-client bounce --duration 4 2>/dev/null |
    tail -1 | python3 -c 'import json,sys
c=json.load(sys.stdin)["status"]["cores"][0]
print("%.1f" % (c["busy_cycles"] / (c["packets"] / 2)))'
}
declare -A all
for _ in $(seq "$rounds"); do
  for b in "$@"; do all[$b]="${all[$b]:-} $(one "$b")"; done
done
for b in "$@"; do
  echo "$b: $(echo ${all[$b]} | tr ' ' '\n' | sort -n |
    awk '{a[NR]=$1} END {printf "best %.1f median %.1f cycles/frame (%d runs)", a[1], a[int((NR+1)/2)], NR}')"
done
