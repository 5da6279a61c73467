# Shared by the bench scripts (sourced, not run): `bench_needs TOOL...` checks the tools a
# bench uses, then sets $stella to the binary under test: $STELLA_BIN when given (made
# absolute), else a fresh release build. `bench_tools TOOL...` only checks the tools (for a
# bench that does not run the binary, such as bench/fuzz.sh).
bench_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" > /dev/null || { echo "bench: $tool is needed" >&2; exit 2; }
  done
}

bench_needs() {
  bench_tools "$@"
  if [[ -n "${STELLA_BIN:-}" ]]; then
    stella=$(cd "$(dirname "$STELLA_BIN")" && pwd)/$(basename "$STELLA_BIN")
  else
    cargo build --release -q
    stella=$PWD/target/release/stella
  fi
}
