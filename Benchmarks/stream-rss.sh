#!/usr/bin/env bash
# Streams a large blob through Berth and reports push/pull MB/s and the
# server's peak RSS (the "bounded memory" floor of issue 3: < 256 MiB for 2 GiB).
#   Benchmarks/stream-rss.sh [SIZE_MIB=2048] [BERTH_BIN=.build/release/berth]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
bin=${BERTH_BIN:-.build/release/berth}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

head -c $((size_mib << 20)) /dev/urandom > "$work/blob"
digest=sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)

"$bin" registry create bench --data-dir "$work/data" >/dev/null 2>&1
"$bin" serve --data-dir "$work/data" --http 127.0.0.1:$port --https off > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
# The bootstrap admin's key, written at first start.
user=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["access_key"]+":"+c["secret_key"])' "$work/data/bootstrap-credentials.json")

# Drop the page cache's copy of the source so the push reads it like a client would.
sync
location=$(curl -sf -u "$user" -X POST -D - -o /dev/null http://127.0.0.1:$port/v2/bench/big/blobs/uploads/ | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
start=$(date +%s.%N)
curl -sf -u "$user" -X PUT -H "Content-Type: application/octet-stream" -H "Expect:" -T "$work/blob" \
    "http://127.0.0.1:$port$location?digest=$digest" -o /dev/null
push=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N)
curl -sf -u "$user" "http://127.0.0.1:$port/v2/bench/big/blobs/$digest" -o /dev/null
pull=$(echo "$(date +%s.%N) - $start" | bc)
# Verified in a second, untimed pull (coreutils' sha256sum is slower than the server).
pulled=$(curl -sf -u "$user" "http://127.0.0.1:$port/v2/bench/big/blobs/$digest" | openssl dgst -sha256 -r | cut -d' ' -f1)
[ "sha256:$pulled" = "$digest" ] || { echo "pulled digest differs" >&2; exit 1; }
peak_kib=$(awk '/VmHWM/{print $2}' /proc/$pid/status)

printf 'blob %d MiB: push %.0f MB/s, pull %.0f MB/s, server peak RSS %.0f MiB\n' \
    "$size_mib" "$(echo "$size_mib * 1.048576 / $push" | bc -l)" "$(echo "$size_mib * 1.048576 / $pull" | bc -l)" \
    "$(echo "$peak_kib / 1024" | bc -l)"
