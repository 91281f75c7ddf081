#!/usr/bin/env bash
# Cross-checks pcl-load against wrk on the same nginx listener, then shows it
# working with client certificates (ssl_verify_client on).
#
#   bench/validate-nginx.sh            # uses the binaries named below
#   RUNS=5 DURATION=5s bench/validate-nginx.sh
#
# Needs: nginx, wrk, taskset, the pcl-load release binary and the portcullis
# binary (for `certs init`). Loopback only; every load run is DURATION long
# (default 5s); nginx is stopped on exit.
set -euo pipefail

PCL=${PCL:-/work/bench-target/release/pcl-load}
PORTCULLIS=${PORTCULLIS:-/work/main/target/debug/portcullis}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
PLAIN_PORT=${PLAIN_PORT:-18080}
TLS_PORT=${TLS_PORT:-18443}

for tool in nginx wrk taskset "$PCL" "$PORTCULLIS"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

DIR=$(mktemp -d /tmp/pcl-validate.XXXXXX)
chmod 755 "$DIR"   # the nginx worker (nobody) serves a file from it
mkdir -p "$DIR/logs"
"$PORTCULLIS" certs init --out "$DIR/pki" >/dev/null
mkdir -p "$DIR/www"
seq 1 5000 >"$DIR/www/numbers.txt"   # ~24 KB, gzipped per request at level 9

# One nginx worker on the last CPU, the load generator on CPU 0: the two do
# not fight over a core (with 2 CPUs they each get one).
NCPU=$(nproc)
SERVER_CPU=$((NCPU - 1))
CLIENT_CPU=0
MASK=1$(printf '%*s' "$SERVER_CPU" '' | tr ' ' 0)

cat >"$DIR/nginx.conf" <<EOF
worker_processes 1;
worker_cpu_affinity $MASK;
pid $DIR/logs/nginx.pid;
error_log $DIR/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    default_type text/plain;
    client_body_temp_path $DIR/logs/body;
    proxy_temp_path $DIR/logs/proxy;
    fastcgi_temp_path $DIR/logs/fcgi;
    uwsgi_temp_path $DIR/logs/uwsgi;
    scgi_temp_path $DIR/logs/scgi;
    server {
        listen 127.0.0.1:$PLAIN_PORT;
        location = / { return 200 "hello\n"; }
        # Server-bound: compressing every response costs nginx far more
        # than the client spends reading it (chunked responses).
        location = /gz {
            alias $DIR/www/numbers.txt;
            gzip on; gzip_types text/plain; gzip_min_length 0; gzip_comp_level 9;
        }
    }
    server {
        listen 127.0.0.1:$TLS_PORT ssl;
        ssl_certificate $DIR/pki/server.pem;
        ssl_certificate_key $DIR/pki/server.key;
        ssl_client_certificate $DIR/pki/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        location = / { return 200 "hello\n"; }
    }
}
EOF

nginx -c "$DIR/nginx.conf" -g 'daemon off;' >"$DIR/logs/stdout" 2>&1 &
NGINX=$!
trap 'kill $NGINX 2>/dev/null; wait $NGINX 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$PLAIN_PORT) 2>/dev/null && break
    sleep 0.1
done

req_per_s() { grep -o '"req_per_s": [0-9.e+]*' "$1" | awk '{print $2}'; }

# compare NAME PATH [extra header]: wrk and pcl-load alternately (which goes
# first alternates too), same listener, same connections and duration.
compare() {
    local name=$1 path=$2 header=${3:-}
    local wrk_h=() pcl_h=() ratios=() i wrk_rps pcl_rps ratio wrk_out wrk_bad pcl_bad
    if [ -n "$header" ]; then wrk_h=(-H "$header"); pcl_h=(-H "$header"); fi
    echo "== $name: $CONNS connections, 1 thread, $DURATION, client on CPU $CLIENT_CPU, nginx on CPU $SERVER_CPU"
    for i in $(seq "$RUNS"); do
        run_wrk() {
            wrk_out=$(taskset -c $CLIENT_CPU wrk -t1 -c"$CONNS" -d"$DURATION" "${wrk_h[@]}" \
                "http://127.0.0.1:$PLAIN_PORT$path")
            wrk_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$wrk_out")
            # Non-2xx responses and socket errors (absent when there are none).
            wrk_bad=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$wrk_out")
        }
        run_pcl() {
            "$PCL" --pin $CLIENT_CPU -t1 -c"$CONNS" -d"$DURATION" --plain "${pcl_h[@]}" \
                --json "$DIR/$name-$i.json" "http://127.0.0.1:$PLAIN_PORT$path" >/dev/null
            pcl_rps=$(req_per_s "$DIR/$name-$i.json")
            pcl_bad=$(grep -o '"errors_total": [0-9]*' "$DIR/$name-$i.json" | awk '{print $2}')
        }
        if [ $((i % 2)) -eq 1 ]; then run_wrk; run_pcl; else run_pcl; run_wrk; fi
        ratio=$(awk -v a="$pcl_rps" -v b="$wrk_rps" 'BEGIN { printf "%.3f", a / b }')
        ratios+=("$ratio")
        printf 'run %d: wrk %10.0f req/s (%s bad)   pcl-load %10.0f req/s (%s errors)   pcl-load/wrk %s\n' \
            "$i" "$wrk_rps" "$wrk_bad" "$pcl_rps" "$pcl_bad" "$ratio"
    done
    printf '%s\n' "${ratios[@]}" | sort -n |
        awk '{a[NR]=$1} END {print "median ratio pcl-load/wrk: " a[int((NR+1)/2)] "  (min " a[1] ", max " a[NR] ")"}'
    echo
}

compare small-static /
compare server-bound-gzip /gz "Accept-Encoding: gzip"

TLS_ARGS=(--cacert "$DIR/pki/ca.pem" --cert "$DIR/pki/client.pem" --key "$DIR/pki/client.key")
P12_ARGS=(--cacert "$DIR/pki/ca.pem" --cert-type P12 --cert "$DIR/pki/client.p12:portcullis")
URL="https://127.0.0.1:$TLS_PORT/"

echo "== mTLS keep-alive (PEM client certificate)"
"$PCL" --pin $CLIENT_CPU -t1 -c"$CONNS" -d"$DURATION" "${TLS_ARGS[@]}" "$URL"
echo
echo "== mTLS, new connection per request (PKCS#12 client identity), 16 connections"
"$PCL" --pin $CLIENT_CPU -t1 -c16 -d"$DURATION" --new-conn "${P12_ARGS[@]}" "$URL"
echo
echo "== mTLS, new connection per request with resumption, TLS 1.2, 16 connections"
"$PCL" --pin $CLIENT_CPU -t1 -c16 -d"$DURATION" --new-conn --resume --tls 1.2 "${TLS_ARGS[@]}" "$URL"
echo
echo "== no client certificate: nginx answers 400 (counted as status_non_2xx)"
"$PCL" --pin $CLIENT_CPU -t1 -c4 -d1s --cacert "$DIR/pki/ca.pem" "$URL" | grep -E 'responses|errors' || true
echo
echo "results in $DIR"
