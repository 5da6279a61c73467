#!/usr/bin/env bash
# Benchmarks planning and validation with the release binary, each against a baseline
# measured in the same run:
#   1. `stella pack plan` of a pack whose map expands to 10,000 children, versus the plan of
#      a trivial one-step pack (process start, reading, checking, planning, hashing).
#      Target: the 10k-map plan, hash included, in under 100 ms of wall time.
#   2. `stella pack validate` over 1,000 small generated packs, versus /bin/true run once per
#      pack in the same bash loop.
# Usage: bench/plan.sh [--quick]    (--quick: 2 plan runs instead of 5, for CI)
# Needs cargo and bash (5+ for its microsecond clock; older bash falls back to `date +%s%N`).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
case "${1:-}" in
  --quick) runs=2 ;;
  "") ;;
  *) echo "usage: bench/plan.sh [--quick]" >&2; exit 2 ;;
esac
readonly map_items=10000 pack_count=1000 target_ms=100

# --- helpers -------------------------------------------------------------------------

# Sets NOW to the wall clock in microseconds, without forking where bash allows it.
now() {
  if [[ -n "${EPOCHREALTIME:-}" ]]; then
    local t=$EPOCHREALTIME
    NOW=${t//[!0-9]/}
  else
    NOW=$(( $(date +%s%N) / 1000 ))
  fi
}

# Microseconds as milliseconds with two decimals.
ms() { printf '%d.%02d' $(( $1 / 1000 )) $(( ($1 % 1000) / 10 )); }

# a / b with one decimal.
ratio() { local r=$(( $1 * 10 / ($2 > 0 ? $2 : 1) )); printf '%d.%dx' $(( r / 10 )) $(( r % 10 )); }

# Median of the arguments (integers).
median() {
  local -a v=("$@")
  local i j t n=${#v[@]}
  for (( i = 1; i < n; i++ )); do
    for (( j = i; j > 0 && v[j-1] > v[j]; j-- )); do
      t=${v[j]}; v[j]=${v[j-1]}; v[j-1]=$t
    done
  done
  if (( n % 2 )); then echo "${v[n/2]}"; else echo $(( (v[n/2-1] + v[n/2]) / 2 )); fi
}

row() { printf '  %-46s %12s\n' "$1" "$2"; }

# --- build and generate ----------------------------------------------------------------

cargo build --release -q
stella=$PWD/target/release/stella
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# (a) A map over an input array of 10,000 strings.
mkdir -p "$work/map-10k"
cat > "$work/map-10k/pack.yaml" <<'EOF'
apiVersion: stella/v1
kind: TaskPack
metadata: { name: map-10k, version: "1.0.0" }
spec:
  inputs:
    - { name: items, type: array, required: true }
  steps:
    - id: each
      map:
        items: "{{ inputs.items }}"
        maxParallel: 8
        step: { id: echo, run: { uses: builtin:exec, with: { argv: [echo, "{{ item }}"] } } }
EOF
{
  printf 'items: ['
  for (( i = 0; i < map_items; i++ )); do
    (( i == 0 )) || printf ', '
    printf 'item-%05d' "$i"
  done
  printf ']\n'
} > "$work/map-10k.inputs.yaml"

# The baseline: one step, no inputs.
mkdir -p "$work/trivial"
cat > "$work/trivial/pack.yaml" <<'EOF'
apiVersion: stella/v1
kind: TaskPack
metadata: { name: trivial, version: "1.0.0" }
spec:
  steps:
    - { id: hello, run: { uses: builtin:exec, with: { argv: [echo, hello] } } }
EOF

# (b) 1,000 small valid packs with varying names, inputs and step kinds.
gen_pack() {
  local i=$1 dir=$2
  mkdir -p "$dir"
  {
    printf 'apiVersion: stella/v1\nkind: TaskPack\n'
    printf 'metadata: { name: gen-%04d, version: "1.%d.%d", description: "generated pack %d" }\n' \
      "$i" $(( i % 7 )) $(( i % 13 )) "$i"
    printf 'spec:\n  inputs:\n'
    printf '    - { name: target, type: string, default: "t%d" }\n' "$i"
    printf '    - { name: count, type: integer, default: %d }\n' $(( i % 50 ))
    if (( i % 11 == 0 )); then
      printf '  approvals:\n    - { id: review-%d, grants: [Packs.Approve], requiredCount: %d, expiresAfter: PT%dH }\n' \
        "$i" $(( i % 3 + 1 )) $(( i % 24 + 1 ))
    fi
    printf '  steps:\n'
    printf '    - id: first\n      run: { uses: builtin:shell, with: { script: "echo %d {{ inputs.target }}" } }\n' "$i"
    printf '      timeout: %dm\n' $(( i % 30 + 1 ))
    if (( i % 2 )); then
      printf '    - id: exec-%d\n      retries: { maxAttempts: %d, backoff: %ds }\n' "$i" $(( i % 5 + 1 )) $(( i % 4 ))
      printf '      run: { uses: builtin:exec, with: { argv: [echo, "{{ inputs.count }}"] } }\n'
    fi
    if (( i % 3 == 0 )); then
      printf '    - id: group\n      env: { TARGET: "{{ inputs.target }}" }\n      parallel:\n        maxParallel: 2\n        steps:\n'
      printf '          - { id: a, run: { uses: builtin:shell, with: { script: "echo a $TARGET" } } }\n'
      printf '          - { id: b, run: { uses: builtin:exec, with: { argv: [echo, b] } } }\n'
    fi
    if (( i % 5 == 0 )); then
      printf '    - id: each\n      map:\n        items: [x, y, z]\n'
      printf '        step: { id: one, run: { uses: builtin:shell, with: { script: "echo {{ item }} {{ steps.first.outputs.ok }}" } } }\n'
    fi
    if (( i % 7 == 0 )); then
      printf '    - id: policy\n      gate: { policy: { expr: "{{ steps.first.outputs.ok == '"'yes'"' }}", failAction: continue } }\n'
    fi
    if (( i % 11 == 0 )); then
      printf '    - id: gate\n      gate: { approval: { id: review-%d, message: "count {{ inputs.count }}" } }\n' "$i"
    fi
  } > "$dir/pack.yaml"
}
for (( i = 0; i < pack_count; i++ )); do
  gen_pack "$i" "$work/packs/gen-$(printf '%04d' "$i")"
done

# Sanity: both plan packs plan, and the map really has its 10,000 children (+ the map step).
"$stella" pack plan "$work/trivial" > /dev/null
summary=$("$stella" pack plan "$work/map-10k" --inputs "$work/map-10k.inputs.yaml")
if [[ "$summary" != *"steps:     $(( map_items + 1 ))"* ]]; then
  echo "bench: the 10k-map plan does not have $(( map_items + 1 )) steps:" >&2
  echo "$summary" >&2
  exit 1
fi

# --- 1. plan ------------------------------------------------------------------------------

base_times=() map_times=()
for (( r = 0; r < runs; r++ )); do
  now; t0=$NOW
  "$stella" pack plan "$work/trivial" > /dev/null
  now; base_times+=($(( NOW - t0 )))
  now; t0=$NOW
  "$stella" pack plan "$work/map-10k" --inputs "$work/map-10k.inputs.yaml" > /dev/null
  now; map_times+=($(( NOW - t0 )))
done
base=$(median "${base_times[@]}")
map=$(median "${map_times[@]}")
diff=$(( map > base ? map - base : 0 ))
verdict=MISS
(( map < target_ms * 1000 )) && verdict=PASS

# --- 2. validate --------------------------------------------------------------------------

# Interleaved, so both see the same machine load: each pack is validated, then
# /bin/true runs once, in the same iteration.
validate_total=0 true_total=0
for dir in "$work"/packs/*/; do
  now; t0=$NOW
  "$stella" pack validate "$dir" > /dev/null
  now; t1=$NOW
  /bin/true "$dir" > /dev/null
  now
  validate_total=$(( validate_total + t1 - t0 ))
  true_total=$(( true_total + NOW - t1 ))
done
per_pack=$(( validate_total > true_total ? (validate_total - true_total) / pack_count : 0 ))

# --- report -------------------------------------------------------------------------------

echo
echo "stella bench: plan and validate ($(nproc 2>/dev/null || echo '?') cpus, release build)"
echo
echo "1. stella pack plan, median of $runs runs"
row "trivial 1-step pack (baseline)" "$(ms "$base") ms"
row "map of $map_items items ($(( map_items + 1 )) plan steps)" "$(ms "$map") ms"
row "difference: planning $map_items children" "$(ms "$diff") ms"
row "ratio map / baseline" "$(ratio "$map" "$base")"
row "target: whole 10k-map plan + hash < $target_ms ms" "$verdict"
echo
echo "2. stella pack validate, $pack_count generated packs, one process each"
row "validate loop, total" "$(ms "$validate_total") ms"
row "/bin/true, same loop, total (baseline)" "$(ms "$true_total") ms"
row "per pack, above baseline" "$(ms "$per_pack") ms"
row "ratio validate / baseline" "$(ratio "$validate_total" "$true_total")"
echo
