#!/usr/bin/env bash
# Builds every fuzz target (fuzz/src/bin/*.rs) with libFuzzer coverage
# instrumentation on stable Rust, then runs each for SECONDS, starting from
# its committed seed corpus (fuzz/corpus/TARGET). New inputs the fuzzer finds
# go to fuzz/target/corpus/TARGET (not committed); a crash is saved under
# fuzz/artifacts/TARGET/ and fails the run. Prints executions per target.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# The flags are cargo fuzz's with `--sanitizer none` (no sanitizer is
# available on stable, and these targets are safe Rust); fuzz/README.md says
# why this setup was chosen. `cargo fuzz run TARGET --sanitizer none` works too.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-}
# libFuzzer reads -max_total_time=0 as "forever": insist on a real duration.
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: fuzz/run.sh SECONDS [TARGET...]  (SECONDS per target, at least 1)" >&2
  exit 2
fi
shift
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in src/bin/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags away from build scripts and proc macros.
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing
)
echo "== fuzz: building ${#targets[@]} targets"
RUSTFLAGS="${flags[*]}" cargo build --locked --release --target "$triple" \
  $(printf -- '--bin %s ' "${targets[@]}")

# CARGO_TARGET_DIR (say, a cache that outlives a CI checkout) is honoured.
bin_dir=${CARGO_TARGET_DIR:-target}/$triple/release
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "target/corpus/$t" "artifacts/$t" target/logs
  log=target/logs/$t.log
  echo "== fuzz: $t for ${secs}s"
  # First corpus dir receives new inputs; the committed one is read only.
  # -timeout: an input that takes seconds is a finding (a hang), not patience.
  if "$bin_dir/$t" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" "target/corpus/$t" "corpus/$t" >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    tail -n 40 "$log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  summary+=("$(printf '%-16s %-6s %12s execs %9s exec/s  %s' "$t" "$status" "${execs:-?}" "${rate:-?}" "$cov")")
done

echo "== fuzz: summary (${secs}s per target; logs in fuzz/target/logs)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (crashing inputs in fuzz/artifacts/)" >&2
  exit 1
fi
