#!/bin/sh
# bench/ktls_vs_userspace.guest.sh - the in-guest half of bench/ktls_vs_userspace.
# Runs under busybox sh inside the QEMU guest (tests/ktls/vm.sh), whose kernel
# has the tls module. For each scenario and round it starts a fresh one-worker
# gateway with ktls = "on" and one with ktls = "off" (same binary, same
# config otherwise), drives it with pcl-load over the guest's loopback, and
# prints raw counters as `KVS <tag> ...` lines for the host script to reduce:
# /proc/PID/stat, the gateway's own /metrics, and two tracefs histograms
# (syscalls by thread and number, io_uring submissions by thread and opcode),
# each snapshotted at the start and the end of a fixed window in the middle
# of the load. Nothing here judges a result; the host does.
#
# Env (set by the host): KVS_DURATION (measured window, s), KVS_WARM (s of load
# before the window), KVS_ROUNDS, KVS_SCENARIOS ("small down up").
set -u
B=/t/portcullis
L=/t/pcl-load
W=/tmp/kvs
DUR=${KVS_DURATION:-8}
WARM=${KVS_WARM:-4}
ROUNDS=${KVS_ROUNDS:-1}
SCENARIOS=${KVS_SCENARIOS:-small down up}
GW=127.0.0.1:8443
ECHO=127.0.0.1:9000
ADMIN=127.0.0.1:9901
T=/sys/kernel/tracing

mkdir -p "$W"
cd "$W" || exit 1
"$B" certs init --out pki >/dev/null 2>&1 || { echo "KVS fatal certs init failed"; exit 1; }

# Kernel-side counts, no ptrace: hist triggers keep a running count per key
# from the moment they are set, at a cost of a hash update per event.
mount -t tracefs nodev "$T" 2>/dev/null
SQE_EVENT=
for e in io_uring_submit_req io_uring_submit_sqe; do
  [ -d "$T/events/io_uring/$e" ] && { SQE_EVENT=$T/events/io_uring/$e; break; }
done
SYS_HIST='hist:keys=common_pid,id:size=16384'
SQE_HIST='hist:keys=common_pid,opcode:size=16384'
# (Re)set both histograms: a table that fills up drops new keys silently, and
# every short-lived helper (wget, awk, sed) adds its own, so each run starts empty.
reset_hists() {
  echo "!$SYS_HIST" > "$T/events/raw_syscalls/sys_enter/trigger" 2>/dev/null
  [ -n "$SQE_EVENT" ] && echo "!$SQE_HIST" > "$SQE_EVENT/trigger" 2>/dev/null
  echo "$SYS_HIST" > "$T/events/raw_syscalls/sys_enter/trigger" 2>/dev/null || SYS_OK=
  [ -n "$SQE_EVENT" ] && { echo "$SQE_HIST" > "$SQE_EVENT/trigger" 2>/dev/null || SQE_EVENT=; }
}
SYS_OK=1
reset_hists
if [ -n "$SYS_OK" ]; then echo "KVS env tracing syscalls=hist"; else echo "KVS env tracing syscalls=none"; fi
if [ -n "$SQE_EVENT" ]; then echo "KVS env tracing sqes=hist event=${SQE_EVENT##*/}"; else echo "KVS env tracing sqes=none"; fi
echo "KVS env kernel $(uname -r) cpus $(nproc)"
echo "KVS env config duration=$DUR warm=$WARM rounds=$ROUNDS scenarios=$(echo $SCENARIOS | tr ' ' ,)"

# Backend on the gateway's core, load on the other (as flamegraphs/make.sh).
taskset -c 1 "$B" echo --listen "$ECHO" --workers 1 >echo.log 2>&1 &
ECHO_PID=$!

# hist lines look like `{ common_pid:  123, id:  426 } hitcount:  4567`;
# print `KIND pid key count` for the threads in $TIDS only.
hist() { # kind file
  awk -v kind="$1" -v tids=" $TIDS " '/^\{/ {
      n = split($0, a, /[^0-9]+/)
      if (index(tids, " " a[2] " ")) print kind, a[2], a[3], a[4]
    }' "$2"
}

snap() { # tag A|B
  TIDS=$(ls "/proc/$GW_PID/task" | tr '\n' ' ')
  P="KVS $1 $2"
  echo "$P uptime $(cut -d' ' -f1 /proc/uptime)"
  echo "$P stat $(cat "/proc/$GW_PID/stat")"
  # per thread: name, utime+stime (ticks), voluntary + involuntary switches
  for t in $TIDS; do
    d=/proc/$GW_PID/task/$t
    echo "$P task $t $(tr ' ' '_' < "$d/comm" 2>/dev/null) $(sed 's/.*) //' "$d/stat" 2>/dev/null | cut -d' ' -f12,13) $(sed -n "s/^voluntary_ctxt_switches:[[:space:]]*//p; s/^nonvoluntary_ctxt_switches:[[:space:]]*//p" "$d/status" 2>/dev/null | tr '\n' ' ')"
  done
  grep -i dropped "$T/events/raw_syscalls/sys_enter/hist" 2>/dev/null | sed "s/^/$P histdrops /"
  [ -n "$SYS_OK" ] && hist sys "$T/events/raw_syscalls/sys_enter/hist" | sed "s/^/$P /"
  [ -n "$SQE_EVENT" ] && hist sqe "$SQE_EVENT/hist" | sed "s/^/$P /"
  wget -q -O - "http://$ADMIN/metrics" 2>/dev/null \
    | grep -E '^portcullis_(requests_total|body_bytes_total|connections_total)' | sed "s/^/$P metric /"
  sed -n 's/^\(Tls[A-Za-z]*\)[[:space:]]*\([0-9]*\)$/\1 \2/p' /proc/net/tls_stat | sed "s/^/$P tls /"
}

wait_ready() { # up to ~30 s for the admin endpoint and the listener
  i=0
  while [ $i -lt 300 ]; do
    wget -q -O /dev/null "http://$ADMIN/healthz" 2>/dev/null && return 0
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

one_run() { # round scenario mode
  tag="r$1-$2-$3"
  echo "KVS $tag run round=$1 scenario=$2 ktls=$3"
  cat > "gw-$tag.toml" <<EOF
[server]
workers = 1
access_log = false
[[listener]]
address = "$GW"
certificate = "pki/server.pem"
private_key = "pki/server.key"
client_ca = ["pki/ca.pem"]
ktls = "$3"
[admin]
address = "$ADMIN"
[limits]
max_body_bytes = "64MiB"
[[route]]
path = "/"
backends = ["$ECHO"]
EOF
  reset_hists
  taskset -c 1 "$B" run --config "gw-$tag.toml" >"gw-$tag.log" 2>&1 &
  GW_PID=$!
  if ! wait_ready; then
    echo "KVS $tag error gateway did not come up"
    sed "s/^/KVS $tag log /" "gw-$tag.log"
    kill -TERM "$GW_PID" 2>/dev/null; wait "$GW_PID"
    return
  fi
  case $2 in
    small) set -- -c 16 ;;
    down) set -- -c 4 -H 'x-echo-bytes: 1048576' ;;
    up) set -- -c 4 -m POST --body-size 1048576 ;;
  esac
  taskset -c 0 "$L" -t 1 --pin 0 -d "$((WARM + DUR))s" --timeout 20s \
    --cacert pki/ca.pem --cert pki/client.pem --key pki/client.key \
    --json "load-$tag.json" "$@" "https://$GW/kvs" >"load-$tag.txt" 2>&1 &
  LOAD_PID=$!
  sleep "$WARM"
  snap "$tag" A
  sleep "$DUR"
  snap "$tag" B
  wait "$LOAD_PID"
  echo "KVS $tag load $(tr -d '\n' < "load-$tag.json" 2>/dev/null)"
  [ -s "load-$tag.json" ] || sed "s/^/KVS $tag loadtxt /" "load-$tag.txt"
  kill -TERM "$GW_PID"
  wait "$GW_PID"
  grep -E 'worker stopped|WARN|ERROR' "gw-$tag.log" | sed "s/^/KVS $tag log /"
}

r=1
while [ "$r" -le "$ROUNDS" ]; do
  for s in $SCENARIOS; do
    # Alternate which mode goes first, so drift hits both alike.
    if [ $((r % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
    for m in $order; do one_run "$r" "$s" "$m"; done
  done
  r=$((r + 1))
done
kill -TERM "$ECHO_PID" 2>/dev/null
wait "$ECHO_PID"
echo "KVS done"
