#!/usr/bin/env bash
# Flamegraphs of the gateway under keep-alive load and under handshake load.
# perf with the software cpu-clock event (works where hardware counters are
# missing), DWARF call graphs (Rust release builds keep no frame pointers),
# inferno to render. Gateway and echo backend on core 1, pcl-load on core 0.
# PROFILES="bulk" (default keepalive, handshake, bulk; also: rate) picks which to take.
# Every load run is bounded (DURATION seconds) and loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
PROFILES=${PROFILES:-keepalive handshake bulk}   # which profiles to take
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
cargo build --release --locked -p portcullis --bin portcullis
cargo build --release --locked -p portcullis-bench --bin pcl-load
B=target/release/portcullis L=target/release/pcl-load W=target/flamegraphs
rm -rf "$W"; mkdir -p "$W"
$B certs init --out "$W/pki" >/dev/null
cat > "$W/gw.toml" <<TOML
[server]
workers = 1
log_level = "warn"
[[listener]]
address = "127.0.0.1:19543"
certificate = "pki/server.pem"
private_key = "pki/server.key"
client_ca = ["pki/ca.pem"]
[[route]]
path = "/"
backends = ["127.0.0.1:19500"]
TOML
taskset -c 1 $B echo --listen 127.0.0.1:19500 --workers 1 2>"$W/echo.log" & echo_pid=$!
taskset -c 1 $B run --config "$W/gw.toml" 2>"$W/gw.log" & gw_pid=$!
trap 'kill $gw_pid $echo_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19543) 2>/dev/null && break; sleep 0.05; done

profile() { # name, pcl-load args...
  local name=$1; shift
  taskset -c 0 $L -t 1 --pin 0 -d "$((DURATION + 2))s" --cert "$W/pki/client.pem" --key "$W/pki/client.key" \
    --cacert "$W/pki/ca.pem" "$@" https://localhost:19543/flame > "$W/$name-load.txt" &
  local load=$!
  sleep 1
  # Syscalls and io_uring operations over the same window, per request.
  # Page faults and madvise: the allocator giving memory back and taking it
  # again; context switches: the gateway sleeping and waking per request.
  perf stat -x, -e raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_short_write,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_madvise,page-faults,context-switches \
    -p "$gw_pid" -o "$W/$name-stat.csv" -- sleep "$DURATION" &
  local stat=$!
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$gw_pid" -o "$W/$name.data" -- sleep "$DURATION" 2>/dev/null
  wait $stat
  wait $load
  python3 - "$W/$name-stat.csv" "$W/$name-load.txt" "$DURATION" > "flamegraphs/$name-counts.txt" <<'PY'
import re, sys
stat, load, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
rps = float(re.search(r"req/s\s+([0-9.]+)", open(load).read()).group(1))
reqs = rps * secs
print(f"over {secs:.0f} s at {rps:.0f} req/s (about {reqs:.0f} requests), per request:")
for line in open(stat):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        print(f"  {float(f[0]) / reqs:10.2f}  {f[2]}")
PY
  cat "flamegraphs/$name-counts.txt"
  perf script -i "$W/$name.data" 2>/dev/null | inferno-collapse-perf > "$W/$name.folded"
  inferno-flamegraph --title "Portcullis, $name ($(grep -m1 'req/s' "$W/$name-load.txt" | tr -s ' ' || true))" < "$W/$name.folded" > "flamegraphs/$name.svg"
  perf report -i "$W/$name.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -15 > "flamegraphs/$name-top.txt" || true
  echo "== $name: flamegraphs/$name.svg"; cat "flamegraphs/$name-top.txt"
}
for p in $PROFILES; do
  case $p in
    keepalive) profile keepalive -c 64 ;;
    handshake) profile handshake -c 16 --new-conn ;;
    # bench/compare's rate scenario: where the time goes at a fixed 5,000 req/s.
    rate) profile rate -c 64 -R 5000 ;;
    # bench/compare's bulk scenario: 1 MiB responses over 8 connections.
    bulk) profile bulk -c 8 -H "x-echo-bytes: 1048576" ;;
    *) echo "unknown profile $p" >&2; exit 2 ;;
  esac
done
