#!/usr/bin/env bash
# Step output benchmark (issue 11): a step printing 10 MB, 100 MB and 1 GB of 99-byte lines,
# run by `stella daemon --once` on a scratch repository with the default limits
# (logBytes 8 MiB per step, runLogBytes 64 MiB per run). For each size it prints:
#   - the runner's peak RSS, and its ratio to a baseline measured in the same run: the same
#     daemon on a step that prints nothing                      target: < 100 MiB, flat in size
#   - the bytes of events the ledger holds for the run (every version of every event file
#     ever committed)                                            target: < 10 MB, flat in size
#   - wall time, against producing the same bytes into /dev/null
# Usage: bench/output.sh [--quick]   (--quick: 10 MB, 50 MB, 200 MB; for CI)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
quick=false
[[ "${1:-}" == "--quick" ]] && quick=true
sizes=(10 100 1000)
$quick && sizes=(10 50 200)
bench_needs git python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One daemon run of a step printing $1 MB; prints "peak_kib committed_bytes seconds".
measure() {
  local mb=$1 repo="$work/repo-$1"
  mkdir -p "$repo/packs/loud"
  (
    cd "$repo"
    git init -q -b main
    "$stella" init . > /dev/null
    cat > packs/loud/pack.yaml <<'PACK'
apiVersion: stella/v1
kind: TaskPack
metadata: { name: loud, version: 1.0.0 }
spec:
  inputs: [{ name: mb, type: string }]
  steps:
    - id: shout
      run: { uses: builtin:shell, with: { script: "head -c $((STELLA_INPUT_MB * 1000000)) /dev/zero | tr '\\0' x | fold -w 99" } }
PACK
    echo "mb: \"$mb\"" > "$work/in-$mb.yaml"
    git add -A && git -c user.name=b -c user.email=b@b commit -q -m init
    "$stella" run request packs/loud --inputs "$work/in-$mb.yaml" --id r1 > /dev/null 2>&1
    git add -A && git -c user.name=b -c user.email=b@b commit -q -m request
  )
  python3 - "$stella" "$repo" <<'PY'
import resource, subprocess, sys, time
stella, repo = sys.argv[1:]
t = time.perf_counter()
subprocess.run([stella, "daemon", "--once", "--repo", repo], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
objs = subprocess.run(["git", "-C", repo, "rev-list", "--objects", "--all"], check=True, capture_output=True, text=True).stdout
ids = "".join(l.split(" ", 1)[0] + "\n" for l in objs.splitlines() if " runs/r1/events" in l and l.endswith(".ndjson"))
sizes = subprocess.run(["git", "-C", repo, "cat-file", "--batch-check=%(objectsize)"], input=ids, check=True, capture_output=True, text=True).stdout
print(peak, sum(int(s) for s in sizes.split()), f"{secs:.2f}")
PY
}

# Producing the same bytes with no runner at all.
bare() {
  python3 - "$1" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(["bash", "-c", f"head -c $(({sys.argv[1]} * 1000000)) /dev/zero | tr '\\0' x | fold -w 99 > /dev/null"], check=True)
print(f"{time.perf_counter() - t:.2f}")
PY
}

read -r base_kib _ _ < <(measure 0)
printf '%-26s %10s %8s %14s %10s %10s\n' "step output" "peak RSS" "ratio" "events stored" "time" "bare time"
printf '%-26s %8.1fMiB %7.2fx %14s %10s %10s\n' "0 MB (baseline)" "$(python3 -c "print($base_kib/1024)")" 1 "-" "-" "-"
for mb in "${sizes[@]}"; do
  read -r kib stored secs < <(measure "$mb")
  bare_secs=$(bare "$mb")
  python3 - "$mb" "$kib" "$base_kib" "$stored" "$secs" "$bare_secs" <<'PY'
import sys
mb, kib, base, stored, secs, bare = sys.argv[1:]
kib, base, stored = int(kib), int(base), int(stored)
ok = "PASS" if kib < 100 * 1024 and stored < 10_000_000 else "MISS"
print(f"{mb + ' MB':<26} {kib/1024:>7.1f}MiB {kib/base:>7.2f}x {stored/1e6:>12.2f}MB {secs:>9}s {bare:>9}s  {ok}")
PY
done
