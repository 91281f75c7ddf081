#!/usr/bin/env bash
# The kernel-TLS suite: builds the gateway and the guest suite as static
# binaries, then boots each Debian kernel (which ships the tls module) in QEMU
# and runs the suite inside, over the guest's own loopback.
#   PORTCULLIS_VM_KERNELS="6.1 6.12"   kernels to boot (default both)
set -euo pipefail
cd "$(dirname "$0")/../.."

target=x86_64-unknown-linux-gnu
echo "== kTLS suite: static build"
# --target explicitly, so proc-macros are not built static.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release --target "$target" \
  --bin portcullis --example ktls-guest
out=target/$target/release

mkdir -p target/ktls-vm
gcc -static -O2 -Wall -o target/ktls-vm/smoke tests/ktls/smoke.c

for kernel in ${PORTCULLIS_VM_KERNELS:-6.1 6.12}; do
  echo "== kTLS suite: kernel $kernel"
  # The C smoke test first: if it fails, the VM or kernel is at fault, not us.
  tests/ktls/vm.sh --kernel "$kernel" target/ktls-vm/smoke -- ./smoke
  tests/ktls/vm.sh --kernel "$kernel" --mem 1024 --env PORTCULLIS_BIN=/t/portcullis \
    "$out/portcullis" "$out/examples/ktls-guest" -- ./ktls-guest
done
