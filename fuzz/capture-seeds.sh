#!/usr/bin/env bash
# Regenerates the captured part of the seed corpus: the first bytes real
# clients send (curl's HTTP requests; ClientHellos from curl, openssl
# s_client and rustls via pcl-load) and a real echo-backend response, each
# caught by a one-shot loopback listener. Run from the repository root after
# `cargo build`; it needs curl, openssl and python3. Hand-written seeds (the
# smuggling shapes, chunked bodies, configs) are committed as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus
bin=target/debug
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

# catch PORTFILE OUTFILE: accept one connection on 127.0.0.1, keep what the
# client sends in its first second (it gets no answer), write it to OUTFILE.
catch() {
  python3 - "$1" "$2" <<'PY' &
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
c, _ = s.accept(); c.settimeout(0.3); data = b""; end = time.time() + 1
while time.time() < end:
    try:
        chunk = c.recv(65536)
    except socket.timeout:
        continue
    if not chunk:
        break
    data += chunk
open(sys.argv[2], "wb").write(data)
PY
  for _ in $(seq 50); do [ -s "$1" ] && break; sleep 0.1; done
}

capture() { # capture OUTFILE COMMAND... (COMMAND gets the port as $PORT)
  local file=$1; shift
  catch "$tmp/port" "$file"
  PORT=$(cat "$tmp/port") bash -c "$*" >/dev/null 2>&1 || true
  wait $! 2>/dev/null || true
  rm -f "$tmp/port"
  echo "$file: $(wc -c <"$file") bytes"
}

# HTTP requests as curl writes them.
capture $out/http_request/curl-get 'curl -s -m 2 "http://localhost:$PORT/api/v1/items?limit=10&sort=name" -H "Accept: application/json"'
capture $out/http_request/curl-post-form 'curl -s -m 2 -d "name=alice&role=admin" http://localhost:$PORT/members/'
capture $out/http_request/curl-put-chunked 'curl -s -m 2 -T - -H "Transfer-Encoding: chunked" http://localhost:$PORT/upload <<<"hello chunked world"'
capture $out/http_request/curl-http10 'curl -s -m 2 -0 -I http://localhost:$PORT/h'

# ClientHellos.
capture $out/client_hello/curl 'curl -s -m 2 -k https://api.example.com:$PORT/ --resolve api.example.com:$PORT:127.0.0.1'
capture $out/client_hello/openssl-s-client 'timeout 2 openssl s_client -connect 127.0.0.1:$PORT -servername a.example </dev/null'
capture $out/client_hello/openssl-tls12 'timeout 2 openssl s_client -tls1_2 -connect 127.0.0.1:$PORT -servername b.example </dev/null'
capture $out/client_hello/openssl-no-sni 'timeout 2 openssl s_client -noservername -connect 127.0.0.1:$PORT </dev/null'
capture $out/client_hello/rustls-pcl-load "timeout 3 $bin/pcl-load -c 1 -t 1 -d 1s --insecure https://localhost:\$PORT/"

# A real response: the echo backend answering curl's GET.
"$bin/portcullis" echo --listen 127.0.0.1:0 >"$tmp/echo.log" 2>&1 &
for _ in $(seq 50); do grep -qo '127.0.0.1:[0-9]*' "$tmp/echo.log" && break; sleep 0.1; done
echo_addr=$(grep -o '127.0.0.1:[0-9]*' "$tmp/echo.log" | head -n 1)
python3 - "$echo_addr" "$out/http_request/curl-get" "$out/http_response/echo-json" <<'PY'
import socket, sys
host, port = sys.argv[1].split(":")
c = socket.create_connection((host, int(port))); c.sendall(open(sys.argv[2], "rb").read())
c.settimeout(1); data = b""
try:
    while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + int(
            [l.split(b":")[1] for l in data.split(b"\r\n") if l.lower().startswith(b"content-length")][0]):
        chunk = c.recv(65536)
        if not chunk: break
        data += chunk
except Exception:
    pass
open(sys.argv[3], "wb").write(data)
PY
echo "$out/http_response/echo-json: $(wc -c <"$out/http_response/echo-json") bytes"
