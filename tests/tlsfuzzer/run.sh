#!/usr/bin/env bash
# Runs a chosen list of tlsfuzzer scripts (client certificates, CertificateVerify,
# malformed certificates and signatures, extended master secret with a client
# certificate, renegotiation, TLS 1.3 KeyUpdate, record fragmentation, SSLv2)
# against real Portcullis gateways and prints a pass/fail/skip table.
#
# NOT part of CI: it needs tlsfuzzer (fetched, never vendored: it is GPL and
# not on PyPI) and takes several minutes. Our own CI-run conformance tests are
# tests/tls_conformance.rs with the scripts in tests/tlsconf/.
#
# Usage:
#   tests/tlsfuzzer/run.sh [SCRIPT-FILTER]
# Environment:
#   TLSFUZZER_DIR    an existing tlsfuzzer checkout; without it the script
#                    clones https://github.com/tlsfuzzer/tlsfuzzer at
#                    TLSFUZZER_REF into the work directory
#   TLSFUZZER_REF    commit to use when cloning (default: the one last run)
#   TLSFUZZER_WORK   work directory (default /tmp/portcullis-tlsfuzzer); the
#                    certificates, gateway logs and each script's output stay
#                    there for reading
#   PORTCULLIS_BIN   the portcullis binary; without it `cargo build --locked`
#                    runs (inside `flock $PORTCULLIS_CARGO_LOCK` when that is set)
#   PYTHON           interpreter to make the venv with (default python3)
#
# Five gateways are started (one worker each, the echo backend behind them),
# so that each script meets the server it was written for:
#   rsa      RSA-2048 server certificate, mtls = "mandatory" (Portcullis's default)
#   rsa-opt  the same with mtls = "optional": scripts whose sanity probes
#            answer the CertificateRequest with an empty Certificate
#   rsa-off  the same with mtls = "off": scripts that expect no CertificateRequest
#   ec       ECDSA P-256 server certificate, mtls = "mandatory"
#   ec-off   ECDSA P-256 server certificate, mtls = "off"
# all trusting one RSA CA that issued an RSA and an ECDSA client certificate.
#
# Many tlsfuzzer TLS 1.2 scripts hard-code AES-128-CBC suites (and RSA or DHE
# key exchange), none of which rustls implements, so each of their probes would
# fail at ServerHello for a reason that has nothing to do with what it tests.
# Entries marked `gcm` below run on a copy of the script whose CBC suites are
# rewritten to the AES-128-GCM suite with the same key exchange and
# authentication; the table says so.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

work=${TLSFUZZER_WORK:-/tmp/portcullis-tlsfuzzer}
ref=${TLSFUZZER_REF:-14555fe211456c46deccc4b2d94751dbd894aece}
python=${PYTHON:-python3}
filter=${1:-}
mkdir -p "$work"

# --- tlsfuzzer: a private copy we may rewrite --------------------------------
tf=$work/tlsfuzzer
rm -rf "$tf"
if [ -n "${TLSFUZZER_DIR:-}" ]; then
  mkdir -p "$tf"
  cp -r "$TLSFUZZER_DIR/scripts" "$TLSFUZZER_DIR/tlsfuzzer" "$TLSFUZZER_DIR/requirements.txt" "$tf/"
else
  git clone --quiet https://github.com/tlsfuzzer/tlsfuzzer "$tf"
  git -C "$tf" checkout --quiet "$ref"
fi

# --- Python: tlsfuzzer's own pinned tlslite-ng, in a venv -----------------------
venv=$work/venv
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$tf/requirements.txt" "ecdsa==0.19.2"
py=$venv/bin/python

# --- the gateway binary -------------------------------------------------------
if [ -z "${PORTCULLIS_BIN:-}" ]; then
  if [ -n "${PORTCULLIS_CARGO_LOCK:-}" ]; then
    flock "$PORTCULLIS_CARGO_LOCK" cargo build --locked --bin portcullis
  else
    cargo build --locked --bin portcullis
  fi
  PORTCULLIS_BIN=$repo/target/debug/portcullis
fi
pc=$PORTCULLIS_BIN

# --- certificates: an RSA CA, RSA and ECDSA servers and clients ---------------
certs=$work/certs
rm -rf "$certs"
"$pc" certs init --out "$certs" --key-type rsa-2048 --server-name localhost >/dev/null
"$pc" certs issue --ca-dir "$certs" --out "$certs" --stem server-ec --cn localhost \
  --server --dns localhost --key-type ecdsa-p256 >/dev/null
"$pc" certs issue --ca-dir "$certs" --out "$certs" --stem client-ec --cn client-ec \
  --key-type ecdsa-p256 >/dev/null
# tlslite reads PKCS#1/PKCS#8 RSA and SEC1/PKCS#8 EC keys; ours are PKCS#8 PEM.

# --- processes ------------------------------------------------------------------
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1
  for _ in $(seq 100); do
    if "$py" -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "run.sh: nothing listens on 127.0.0.1:$port" >&2
  exit 1
}

echo_port=$(free_port)
"$pc" echo --listen "127.0.0.1:$echo_port" >"$work/echo.log" 2>&1 &
pids+=($!)
wait_port "$echo_port"

declare -A port
start_gateway() {
  local name=$1 cert=$2 key=$3 mtls=$4
  local p
  p=$(free_port)
  cat >"$work/$name.toml" <<EOF
# tests/tlsfuzzer/run.sh: gateway "$name"
[server]
workers = 1
driver = "auto"

[[listener]]
address = "127.0.0.1:$p"

[[site]]
name = "$name"
server_names = ["localhost"]
certificate = "$cert"
private_key = "$key"
client_ca = ["$certs/ca.pem"]
mtls = "$mtls"
default = true

[timeouts]
handshake = "10s"

[[route]]
path = "/"
backends = ["127.0.0.1:$echo_port"]
EOF
  "$pc" run --config "$work/$name.toml" >"$work/gateway-$name.log" 2>&1 &
  pids+=($!)
  wait_port "$p"
  port[$name]=$p
}
start_gateway rsa "$certs/server.pem" "$certs/server.key" mandatory
start_gateway rsa-opt "$certs/server.pem" "$certs/server.key" optional
start_gateway rsa-off "$certs/server.pem" "$certs/server.key" off
start_gateway ec "$certs/server-ec.pem" "$certs/server-ec.key" mandatory
start_gateway ec-off "$certs/server-ec.pem" "$certs/server-ec.key" off

rsa_client=(-k "$certs/client.key" -c "$certs/client.pem")
ec_client=(-k "$certs/client-ec.key" -c "$certs/client-ec.pem")

# What rustls 0.23 (aws-lc-rs provider) lists in CertificateRequest, in its order.
sigs12="ecdsa_secp384r1_sha384 ecdsa_secp256r1_sha256 ecdsa_secp521r1_sha512 ed25519 rsa_pss_rsae_sha512 rsa_pss_rsae_sha384 rsa_pss_rsae_sha256 rsa_pkcs1_sha512 rsa_pkcs1_sha384 rsa_pkcs1_sha256"
sigs13="$sigs12 mldsa44 mldsa65 mldsa87"

# gcm: rewrite the script's AES-128-CBC suites to AES-128-GCM (see the top).
gcm_rewrite() {
  local app=$tf/tlsfuzzer/_apps/$1
  sed -i \
    -e 's/TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\b/TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256/g' \
    -e 's/TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA\b/TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256/g' \
    -e 's/TLS_DHE_RSA_WITH_AES_128_CBC_SHA\b/TLS_DHE_RSA_WITH_AES_128_GCM_SHA256/g' \
    -e 's/TLS_RSA_WITH_AES_128_CBC_SHA\b/TLS_RSA_WITH_AES_128_GCM_SHA256/g' \
    "$app"
}

# --- the chosen scripts ------------------------------------------------------
# `-n 0` where a script would otherwise run a random sample of its probes:
# every run then checks the same ones.
# gateway | script | gcm? | what it checks | arguments...
results=$work/results.txt
: >"$results"
rm -f "$work"/out-*.txt
run() {
  local gw=$1 script=$2 gcm=$3 what=$4
  shift 4
  if [ -n "$filter" ] && [[ "$script" != *"$filter"* ]]; then
    return 0
  fi
  local app
  app=$(basename "$script" .py | tr - _).py
  if [ "$gcm" = gcm ]; then gcm_rewrite "$app"; fi
  local n
  n=$(wc -l <"$results")
  local out=$work/out-$n-${script%.py}.txt
  local started=$SECONDS
  echo "== [$gw] $script $*" >&2
  set +e
  (cd "$tf" && timeout 1800 "$py" "scripts/$script" -h localhost -p "${port[$gw]}" "$@") >"$out" 2>&1
  local rc=$?
  set -e
  local secs=$((SECONDS - started))
  local total pass fail skip xfail failed
  total=$(sed -n 's/^TOTAL: //p' "$out" | tail -1)
  pass=$(sed -n 's/^PASS: //p' "$out" | tail -1)
  fail=$(sed -n 's/^FAIL: //p' "$out" | tail -1)
  skip=$(sed -n 's/^SKIP: //p' "$out" | tail -1)
  xfail=$(sed -n 's/^XFAIL: //p' "$out" | tail -1)
  # The names after "FAILED:" (one per line, tab-indented, quoted).
  failed=$(awk '/^FAILED:/{f=1;next} f && /^\t/{sub(/^\t/,""); printf "%s; ", $0; next} f{f=0}' "$out")
  local result
  if [ -z "$total" ]; then
    result="ERROR (rc=$rc, no summary: see $out)"
  elif [ "$rc" = 0 ]; then
    result="pass"
  else
    result="FAIL"
  fi
  local args="$*"
  args=${args//$certs\//}
  printf '%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\n' \
    "$script" "$gw" "$gcm" "$args" "$what" "$result" "${total:-?}" "${pass:-?}" "${fail:-?}" \
    "${skip:-?}/${xfail:-?}" "${secs}s" "$failed" >>"$results"
}

# Client certificates, TLS 1.2.
run rsa-opt test-certificate-request.py gcm "CertificateRequest contents; each offered scheme accepted" \
  "${rsa_client[@]}" -d -T "rsa_sign ecdsa_sign" -s "$sigs12"
run rsa test-certificate-verify.py gcm "CertificateVerify with MD5 or a TLS 1.1 signature refused (SLOTH)" \
  "${rsa_client[@]}" -d
run rsa test-certificate-verify-malformed.py gcm "CertificateVerify with bad lengths, truncated, padded" \
  -n 0 "${rsa_client[@]}" -d
run rsa test-certificate-verify-malformed-sig.py gcm "CertificateVerify signatures in wrong hash envelopes, bit flips" \
  -n 0 "${rsa_client[@]}" -d
run rsa test-certificate-malformed.py gcm "Certificate message fuzzing (mandatory mTLS)" \
  -n 0 "${rsa_client[@]}" -d
run rsa-opt test-certificate-malformed.py gcm "Certificate message fuzzing (optional mTLS)" \
  -n 0 "${rsa_client[@]}" -d
run rsa test-rsa-sigs-on-certificate-verify.py gcm "RSA PKCS#1 CertificateVerify per hash; hash mismatches" \
  -n 0 "${rsa_client[@]}" -d
run rsa test-rsa-pss-sigs-on-certificate-verify.py gcm "RSA-PSS CertificateVerify; bit flips, salt lengths" \
  -n 0 "${rsa_client[@]}" -s "$sigs12"
run rsa-opt test-extended-master-secret-extension-with-client-cert.py gcm "extended master secret with a client certificate" \
  "${rsa_client[@]}" -d
run ec test-ecdsa-in-certificate-verify.py gcm "ECDSA CertificateVerify per hash; mislabelled hashes" \
  -n 0 "${ec_client[@]}"
run ec-off test-ecdsa-sig-flexibility.py no "our ECDSA ServerKeyExchange per offered hash" \
  -C TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
# Client certificates, TLS 1.3.
run rsa-opt test-tls13-certificate-request.py no "TLS 1.3 CertificateRequest contents; empty and real Certificate" \
  "${rsa_client[@]}" -s "$sigs13" -E "47:CR key_share:SH supported_versions:SH"
run rsa test-tls13-certificate-verify.py no "TLS 1.3 RSA CertificateVerify: PKCS#1 refused, PSS, bit flips" \
  -n 0 "${rsa_client[@]}" -s "$sigs13"
run ec test-tls13-ecdsa-in-certificate-verify.py no "TLS 1.3 ECDSA CertificateVerify: hash/curve mismatches, bit flips" \
  -n 0 "${ec_client[@]}" -s "$sigs13"
run rsa-off test-tls13-post-handshake-auth.py no "post_handshake_auth offered (we never use it)" \
  "${rsa_client[@]}"
# Renegotiation (rustls never renegotiates).
run rsa-off test-renegotiation-disabled.py no "client-initiated renegotiation refused" \
  -C TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
run rsa-off test-renegotiation-disabled-client-cert.py gcm "renegotiation carrying a client certificate refused" \
  "${rsa_client[@]}" -d
# TLS 1.3 KeyUpdate, record layer, ClientHello reassembly (ours runs before rustls).
run rsa-off test-tls13-keyupdate.py no "TLS 1.3 KeyUpdate from the client: requested or not, fragmented, invalid" \
  -n 0 --coalescing
run rsa-off test-record-layer-fragmentation.py no "ClientHello fragmented over records, up to 64 KiB" \
  -n 0 -C TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
run rsa-off test-client-hello-max-size.py gcm "ClientHello of the largest sizes" -d
run rsa-off test-sslv2-connection.py no "SSLv2 ClientHello refused"

# --- the table -------------------------------------------------------------------
echo
echo "| script | gateway | CBC->GCM | what it checks | result | probes | pass | fail | skip/xfail | time |"
echo "|---|---|---|---|---|---:|---:|---:|---|---:|"
while IFS=$'\x1f' read -r script gw gcm args what result total pass fail skipx secs failed; do
  echo "| $script | $gw | $gcm | $what | $result | $total | $pass | $fail | $skipx | $secs |"
done <"$results"
echo
echo "Failed probes (the script's output is in $work/out-N-SCRIPT.txt, the gateways' logs in $work/gateway-*.log):"
while IFS=$'\x1f' read -r script gw gcm args what result total pass fail skipx secs failed; do
  if [ -n "$failed" ]; then echo "- $script: $failed"; fi
done <"$results"
