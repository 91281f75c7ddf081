#!/usr/bin/env bash
# The test command README gives: unit tests, then the integration suite once
# per I/O driver (io_uring, then forced epoll), against the real binary, then
# the kernel-TLS suite inside QEMU VMs (Debian 6.1 and 6.12 kernels).
# PORTCULLIS_TEST_DRIVERS="epoll" limits the drivers (e.g. a host without io_uring).
# PORTCULLIS_SKIP_VM=1 skips the VM suite (it needs qemu and ~2 min of builds).
# The fuzz targets (fuzz/run.sh) run after the unit tests, PORTCULLIS_FUZZ_SECONDS
# (default 5) each; PORTCULLIS_SKIP_FUZZ=1 skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in curl openssl python3 haproxy nghttp h2load wrk make gcc; do
  # nghttp and h2load are Debian's nghttp2-client.
  command -v "$tool" >/dev/null || { echo "tests/run.sh: $tool is required (apt-get install $tool; nghttp, h2load: nghttp2-client)" >&2; exit 2; }
done
# tests/load_tools.rs builds bench/mtls-preload against OpenSSL's headers.
echo '#include <openssl/ssl.h>' | gcc -E -x c - >/dev/null 2>&1 ||
  { echo "tests/run.sh: OpenSSL headers are required to build bench/mtls-preload (apt-get install libssl-dev)" >&2; exit 2; }
# tests/tls_conformance.rs drives tlslite-ng clients (.ci/run installs them).
python3 -c 'import tlslite, ecdsa' 2>/dev/null ||
  { echo "tests/run.sh: python3 needs tlslite-ng and ecdsa: python3 -m pip install tlslite-ng==0.8.2 ecdsa==0.19.2" >&2; exit 2; }
# tests/http2.rs drives a raw-frame HTTP/2 client built on h2's hpack and hyperframe.
python3 -c 'import h2, hpack, hyperframe' 2>/dev/null ||
  { echo "tests/run.sh: python3 needs h2: python3 -m pip install h2==4.4.1 hpack==4.2.0 hyperframe==6.1.0" >&2; exit 2; }

drivers=${PORTCULLIS_TEST_DRIVERS:-"io_uring epoll"}
cargo build --workspace --all-targets --locked
echo "== unit tests"
cargo test --locked --lib --bins
cargo test --locked -p portcullis-bench
if [ "${PORTCULLIS_SKIP_FUZZ:-0}" = 1 ]; then
  echo "== fuzz targets skipped (PORTCULLIS_SKIP_FUZZ=1)"
else
  # Every fuzz target for a few seconds: its committed corpus (seeds and every
  # input that ever crashed it) is replayed first, so this is also the
  # regression run. A longer run: fuzz/run.sh 300.
  fuzz/run.sh "${PORTCULLIS_FUZZ_SECONDS:-5}"
fi
for driver in $drivers; do
  echo "== integration tests, driver=$driver"
  PORTCULLIS_DRIVER=$driver cargo test --locked --test '*' -- --test-threads=4
done

if [ "${PORTCULLIS_SKIP_VM:-0}" = 1 ]; then
  echo "== kTLS VM suite skipped (PORTCULLIS_SKIP_VM=1)"
else
  tests/ktls/run.sh
fi
