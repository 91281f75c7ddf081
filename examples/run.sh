#!/bin/sh
# Runs one example end to end: certificates, backends, gateway.
#   ./examples/run.sh sites | policy | identity | upstream-mtls
# The echo backend listens on 127.0.0.1:9000 (plain) and 127.0.0.1:9443
# (TLS, demanding the gateway's client certificate); the gateway on :8443.
set -eu
name=${1:?usage: examples/run.sh sites|policy|identity|upstream-mtls}
here=$(cd "$(dirname "$0")" && pwd)
cargo build --quiet --release
bin="$here/../target/release/portcullis"
PORTCULLIS="$bin" "$here/setup.sh"
"$bin" echo --listen 127.0.0.1:9000 --workers 1 &
plain=$!
u="$here/certs/upstream"
"$bin" echo --listen 127.0.0.1:9443 --workers 1 --tls-cert "$u/server.pem" --tls-key "$u/server.key" --client-ca "$u/ca.pem" &
tls=$!
trap 'kill $plain $tls 2>/dev/null' EXIT INT TERM
export SITE_B_P12_PASSWORD=portcullis
"$bin" run --config "$here/$name.toml"
