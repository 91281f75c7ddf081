#!/bin/sh
# Generates the certificates the examples use, into examples/certs (or $1).
# Run from the repository root:  ./examples/setup.sh
# Idempotent: existing sets are kept. PORTCULLIS may name a built binary.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/certs"}
if [ -n "${PORTCULLIS:-}" ]; then
    pc() { "$PORTCULLIS" "$@"; }
else
    pc() { cargo run --quiet --release -- "$@"; }
fi
mkdir -p "$out"
# Site A (a.example): its own CA, server certificate, client "alice".
pc certs init --out "$out/a" --server-name a.example --client-cn alice >/dev/null
# Site B (b.example): another CA; its clients are strangers to site A.
pc certs init --out "$out/b" --server-name b.example --client-cn bob >/dev/null
# More clients of CA A: a SPIFFE workload, and one that gets revoked.
[ -f "$out/a/workload.pem" ] || pc certs issue --ca-dir "$out/a" --out "$out/a" --stem workload --cn workload \
    --uri spiffe://example.org/ns/prod/sa/api >/dev/null
[ -f "$out/a/mallory.pem" ] || pc certs issue --ca-dir "$out/a" --out "$out/a" --stem mallory --cn mallory >/dev/null
pc certs crl --ca-dir "$out/a" --out "$out/a/crl.pem" --revoke "$out/a/mallory.pem" >/dev/null
# The backend behind upstream mTLS: its CA, its server certificate
# (app.internal), and the client certificate the gateway presents to it.
pc certs init --out "$out/upstream" --server-name app.internal --client-cn portcullis-gateway >/dev/null
# PKCS#12 passwords kept outside the config (certs init uses "portcullis").
printf 'portcullis\n' > "$out/p12-password"
echo "examples: certificates in $out"
