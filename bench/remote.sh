#!/usr/bin/env bash
# Runners on a shared git server (a bare hub repository on local disk), each figure next to a
# baseline measured in the same run:
#   1. claim cost: N create-only pushes of a claim ref (`git push --force-with-lease=REF:`,
#      what a claim is) against N plain pushes of a new ref: ms per push for each, and the ratio.
#   2. throughput: N one-step requests (builtin:exec /bin/true) pushed in one commit, carried out
#      by one runner (`stella daemon --once --remote origin`), then by three runners watching the
#      hub (`--poll 1s`) on a fresh hub: runs/s, and three against one.
#   3. the same with steps that wait (`sleep 0.5`, as a step waiting on a remote system does):
#      what scaling out buys when the steps, not the machine, are the limit.
#      Every run must end succeeded and executed exactly once (one step.started each), and the
#      hub's ledger must verify; the bench fails otherwise.
#   baseline for 2: the same N requests run by `stella daemon --once` with no remote.
# Usage: bench/remote.sh [--quick]   (--quick: N=10; default N=60)
# Needs bash, git and python3 (and cargo, unless STELLA_BIN names a built stella binary).
set -euo pipefail
cd "$(dirname "$0")/.."

n=60
case "${1:-}" in
  --quick) n=10 ;;
  "") ;;
  *) echo "usage: bench/remote.sh [--quick]" >&2; exit 2 ;;
esac
source bench/lib.sh
bench_needs git python3

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
now() { python3 -c 'import time; print(time.monotonic())'; }
elapsed() { python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$1" "$2"; }

step_argv='"true"'
pack() {
  printf 'apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [%s] } } }\n' "$step_argv"
}

# A hub with an admin clone holding the pack, and `$2` runner clones whose keys it trusts.
setup() {
  local dir=$1 runners=$2 i
  mkdir -p "$dir"
  git init -q --bare -b main "$dir/hub"
  git init -q -b main "$dir/admin"
  (cd "$dir/admin" && "$stella" init . > /dev/null)
  mkdir -p "$dir/admin/packs/t"
  pack > "$dir/admin/packs/t/pack.yaml"
  printf 'branch: main\ncommit: { batchMs: 60000 }\nlimits: { maxRuns: 4 }\n' > "$dir/admin/.stella/config.yaml"
  git -C "$dir/admin" add -A
  git -C "$dir/admin" commit -q -m setup
  git -C "$dir/admin" remote add origin "$dir/hub"
  git -C "$dir/admin" push -q origin main
  for i in $(seq 1 "$runners"); do
    git clone -q "$dir/hub" "$dir/runner$i"
    (cd "$dir/runner$i" && "$stella" init . > /dev/null)
    git -C "$dir/runner$i" add .stella
    git -C "$dir/runner$i" commit -q -m "trust runner $i"
    git -C "$dir/runner$i" pull -q --rebase origin main
    git -C "$dir/runner$i" push -q origin main
  done
  for i in $(seq 1 "$runners"); do git -C "$dir/runner$i" pull -q --ff-only origin main; done
  git -C "$dir/admin" pull -q --ff-only origin main
}

# N requests in one commit, pushed to the hub.
request_all() {
  local dir=$1 i
  for i in $(seq -w 1 "$n"); do
    mkdir -p "$dir/admin/runs/b$i"
    printf 'apiVersion: stella/v1\nkind: RunRequest\npack: packs/t\n' > "$dir/admin/runs/b$i/request.yaml"
  done
  git -C "$dir/admin" add runs
  git -C "$dir/admin" commit -q -m "$n requests"
  git -C "$dir/admin" push -q origin main
}

# How many runs on the hub succeeded (as the admin sees it after pulling).
succeeded() {
  git -C "$1/admin" pull -q --ff-only origin main
  (cd "$1/admin" && "$stella" runs list --json) |
    python3 -c 'import json,sys; print(sum(r["state"] == "succeeded" for r in json.load(sys.stdin)))'
}

# Every run executed exactly once, and the ledger verifies.
check() {
  local dir=$1 i starts
  for i in $(seq -w 1 "$n"); do
    starts=$(git -C "$dir/admin" show "main:runs/b$i/events.ndjson" | grep -c '"type":"step.started"' || true)
    [[ $starts == 1 ]] || { echo "bench: run b$i started $starts times" >&2; exit 1; }
  done
  (cd "$dir/admin" && "$stella" ledger verify > /dev/null) || { echo "bench: the hub's ledger does not verify" >&2; exit 1; }
}

echo "bench/remote.sh: N=$n, $(nproc) cores, git $(git --version | cut -d' ' -f3)"

# 1. claim cost against a plain push.
setup "$work/c" 1
r="$work/c/runner1"
blob=$(printf 'runner bench\nat 0\n' | git -C "$r" hash-object -w --stdin)
t0=$(now)
for i in $(seq 1 "$n"); do git -C "$r" push -q origin "$blob:refs/bench/plain/$i"; done
t1=$(now)
for i in $(seq 1 "$n"); do git -C "$r" push -q --force-with-lease="refs/stella/claims/c$i:" origin "$blob:refs/stella/claims/c$i"; done
t2=$(now)
plain=$(elapsed "$t0" "$t1")
claim=$(elapsed "$t1" "$t2")

# 2. baseline: the same requests with no remote.
setup "$work/l" 0
request_all "$work/l"
t0=$(now)
(cd "$work/l/admin" && "$stella" daemon --once --repo . > /dev/null)
t1=$(now)
local_s=$(elapsed "$t0" "$t1")

# One runner, then three, on fresh hubs under $1: sets one_s, three_s and by_runner.
scale() {
  local base=$1 i p t0 t1
  setup "$base/one" 1
  request_all "$base/one"
  t0=$(now)
  (cd "$base/one/runner1" && "$stella" daemon --once --repo . --remote origin > /dev/null)
  t1=$(now)
  one_s=$(elapsed "$t0" "$t1")
  [[ $(succeeded "$base/one") == "$n" ]] || { echo "bench: one runner left runs unfinished" >&2; exit 1; }
  check "$base/one"
  setup "$base/three" 3
  pids=()
  for i in 1 2 3; do
    (cd "$base/three/runner$i" && exec "$stella" daemon --repo . --remote origin --poll 1s > "$base/three/runner$i.log" 2>&1) &
    pids+=($!)
  done
  sleep 1
  t0=$(now)
  request_all "$base/three"
  while [[ $(succeeded "$base/three") != "$n" ]]; do
    sleep 0.2
    if [[ $(elapsed "$t0" "$(now)" | cut -d. -f1) -gt 600 ]]; then
      echo "bench: three runners did not finish in 600 s" >&2
      tail -n 20 "$base/three"/runner*.log >&2
      exit 1
    fi
    for p in "${pids[@]}"; do
      kill -0 "$p" 2> /dev/null || { echo "bench: a runner stopped" >&2; tail -n 20 "$base/three"/runner*.log >&2; exit 1; }
    done
  done
  t1=$(now)
  three_s=$(elapsed "$t0" "$t1")
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  check "$base/three"
  by_runner=$(for i in $(seq -w 1 "$n"); do
    git -C "$base/three/hub" cat-file -p "refs/stella/claims/b$i" | head -n 1
  done | sort | uniq -c | awk '{printf "%s%s", sep, $1; sep="/"}')
}

scale "$work/trivial"
one_trivial=$one_s three_trivial=$three_s by_trivial=$by_runner
step_argv='sleep, "0.5"'
scale "$work/waiting"
one_wait=$one_s three_wait=$three_s by_wait=$by_runner

python3 - "$n" "$plain" "$claim" "$local_s" "$one_trivial" "$three_trivial" "$by_trivial" "$one_wait" "$three_wait" "$by_wait" <<'EOF'
import sys
n = int(sys.argv[1])
plain, claim, local, one, three = map(float, sys.argv[2:7])
one_w, three_w = float(sys.argv[8]), float(sys.argv[9])
print(f"{'measure':58} {'value':>10} {'baseline':>10} {'ratio':>7}")
print(f"{'claim: create-only push, ms each (vs plain push)':58} {claim / n * 1000:10.1f} {plain / n * 1000:10.1f} {claim / plain:7.2f}")
print(f"{'trivial steps, one runner with the hub, runs/s (vs local)':58} {n / one:10.2f} {n / local:10.2f} {local / one:7.2f}")
print(f"{'trivial steps, three runners, runs/s (vs one runner)':58} {n / three:10.2f} {n / one:10.2f} {one / three:7.2f}")
print(f"{'0.5 s steps, three runners, runs/s (vs one runner)':58} {n / three_w:10.2f} {n / one_w:10.2f} {one_w / three_w:7.2f}")
print(f"runs per runner, by claim: trivial {sys.argv[7]}, 0.5 s steps {sys.argv[10]}")
print("every run executed exactly once; each hub's ledger verifies")
EOF
