#!/usr/bin/env bash
# Fuzzes the engine's readers of untrusted input (fuzz/, cargo-fuzz and libFuzzer): builds
# every target once, then runs each for S seconds, one after another on one core, and
# prints a line per target and a total:
#   fuzz <target>: <execs> execs in <S> s, <n> crashes (<execs>/s, corpus <files> files)
#   fuzz: T targets, C crashes
# Exits 1 on any crash (a panic, an ASan report, an input slower than 60 s or one that
# takes more than 2 GiB), printing the path of the input that did it; reproduce it with
# `cargo fuzz run --fuzz-dir fuzz <target> <path>`, and keep it in fuzz/regressions/<target>/.
#
# Usage: bench/fuzz.sh [--seconds S] [--dev] [TARGET...]   (default: 600 s each, every target)
# --dev builds the targets unoptimised (cargo fuzz build --dev): half the build time and a
# fraction of the executions per second, for a smoke run of a few seconds (CI uses it).
# The corpus each run grows is fuzz/corpus/<target>/ (not committed); the committed seeds in
# fuzz/seeds/<target>/ and the crash inputs in fuzz/regressions/<target>/ are read, never
# written. Installs cargo-fuzz when it is missing. The toolchain is stable: RUSTC_BOOTSTRAP=1
# lets cargo-fuzz pass its -Z flags. FUZZ_SANITIZER=none runs without AddressSanitizer
# (about twice as many executions; the engine and its parsers are safe Rust).
# Run it nice'd on a shared machine: nice -n 10 bash bench/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

seconds=600
targets=()
profile=()
while (( $# )); do
  case "$1" in
    --seconds) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "usage: bench/fuzz.sh [--seconds S] [--dev] [TARGET...]" >&2; exit 2; }
               seconds=$2; shift 2 ;;
    --dev) profile=(--dev); shift ;;
    -*) echo "usage: bench/fuzz.sh [--seconds S] [--dev] [TARGET...]" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

bench_tools cargo
if ! command -v cargo-fuzz > /dev/null; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
# -a: debug assertions and overflow checks, so an arithmetic overflow is a crash too.
build_flags=(-a --sanitizer "$sanitizer" --fuzz-dir fuzz "${profile[@]}")

if (( ${#targets[@]} == 0 )); then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
echo "fuzz: building ${#targets[@]} targets (sanitizer $sanitizer${profile:+, unoptimised})" >&2
cargo fuzz build "${build_flags[@]}"

logs=fuzz/target/logs
mkdir -p "$logs"
summary=()
total_crashes=0
failed=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  dirs=("$corpus" "fuzz/seeds/$t")
  [[ -d fuzz/regressions/$t ]] && dirs+=("fuzz/regressions/$t")
  marker=$(mktemp)
  echo "fuzz: $t for $seconds s" >&2
  start=$SECONDS
  rc=0
  cargo fuzz run "${build_flags[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 -print_final_stats=1 \
    > "$logs/$t.log" 2>&1 || rc=$?
  elapsed=$(( SECONDS - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
  execs=${execs:-0}
  # libFuzzer's own time when it ran to the end (the wall time also holds cargo's checks).
  ran=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$logs/$t.log" | tail -n 1)
  elapsed=${ran:-$elapsed}
  mapfile -t found < <(find "$artifacts" -type f -newer "$marker" | sort)
  rm -f "$marker"
  crashes=${#found[@]}
  if (( rc != 0 && crashes == 0 )); then
    # libFuzzer stopped without leaving an input (the build or the harness broke).
    echo "fuzz: $t failed (exit $rc) without a crash input; see $logs/$t.log" >&2
    tail -n 20 "$logs/$t.log" >&2
    crashes=1
    failed+=("$logs/$t.log")
  fi
  for f in "${found[@]}"; do
    echo "fuzz: $t crashed on $f (log: $logs/$t.log)" >&2
    grep -m 1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$logs/$t.log" >&2 || true
    failed+=("$f")
  done
  files=$(find "$corpus" -type f | wc -l)
  rate=$(( execs / (elapsed > 0 ? elapsed : 1) ))
  summary+=("fuzz $t: $execs execs in $elapsed s, $crashes crashes ($rate/s, corpus $files files)")
  total_crashes=$(( total_crashes + crashes ))
done

printf '%s\n' "${summary[@]}"
echo "fuzz: ${#targets[@]} targets, $total_crashes crashes"
if (( total_crashes > 0 )); then
  printf 'fuzz: crash input: %s\n' "${failed[@]}"
  exit 1
fi
