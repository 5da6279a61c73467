#!/usr/bin/env bash
# Executor benchmarks: each figure is a ratio against a baseline measured in the same run.
#   1. 1,000 sequential builtin:exec /bin/true steps (events to a file) vs 1,000 spawns of
#      /bin/true from a bash loop                                   target <= 1.5x
#   2. a map of 2,000 items, maxParallel 2, vs xargs -P2 running the same commands
#                                                                   target <= 1.3x
#   3. peak resident memory of a 10,000-step map run                target < 50 MiB
# Usage: bench/exec.sh [--quick]   (--quick: fewer repetitions, smaller sizes; for CI)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
[[ "${1:-}" == "--quick" ]] && quick=true
reps=5; seq_n=1000; map_n=2000; mem_n=10000
if $quick; then reps=1; seq_n=300; map_n=500; mem_n=2000; fi

cargo build --release -q
stella="$PWD/target/release/stella"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$seq_n" "$map_n" "$mem_n" <<'PY'
import json, sys
work, seq_n, map_n, mem_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
head = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: %s, version: 1.0.0 }\nspec:\n"
import os
os.makedirs(f"{work}/seq"); os.makedirs(f"{work}/map")
with open(f"{work}/seq/pack.yaml", "w") as f:
    f.write(head % "seq" + "  steps:\n")
    for i in range(seq_n):
        f.write(f"    - {{ id: s{i}, run: {{ uses: builtin:exec, with: {{ argv: [/bin/true] }} }} }}\n")
with open(f"{work}/map/pack.yaml", "w") as f:
    f.write(head % "map" + "  inputs: [{ name: items, type: array }]\n  steps:\n    - id: each\n      map:\n        items: \"{{ inputs.items }}\"\n        maxParallel: 2\n        step: { id: one, run: { uses: builtin:exec, with: { argv: [/bin/true, \"{{ item }}\"] } } }\n")
json.dump({"items": [f"item-{i}" for i in range(map_n)]}, open(f"{work}/map-small.json", "w"))
json.dump({"items": [f"item-{i}" for i in range(mem_n)]}, open(f"{work}/map-large.json", "w"))
PY

# Median wall time in seconds of a command run $reps times (each in a fresh run directory).
median() {
  python3 - "$reps" "$@" <<'PY'
import subprocess, sys, time, statistics, tempfile, os
reps, cmd = int(sys.argv[1]), sys.argv[2]
times = []
for _ in range(reps):
    d = tempfile.mkdtemp()
    t = time.perf_counter()
    subprocess.run(["bash", "-c", cmd.replace("@DIR@", d)], check=True, stdout=subprocess.DEVNULL)
    times.append(time.perf_counter() - t)
print(f"{statistics.median(times):.4f}")
PY
}

cd "$work"
base_seq=$(median "for i in \$(seq $seq_n); do /bin/true; done")
stella_seq=$(median "$stella pack run seq --events @DIR@/events.ndjson --dir @DIR@/run")
# The same steps unisolated: what the sandbox (namespaces, mounts, two more forks) costs a step.
stella_seq_off=$(median "$stella pack run seq --sandbox off --events @DIR@/events.ndjson --dir @DIR@/run")
base_map=$(median "seq $map_n | xargs -P2 -I{} /bin/true item-{}")
stella_map=$(median "$stella pack run map --inputs map-small.json --events @DIR@/events.ndjson --dir @DIR@/run")
peak=$(python3 - "$stella" <<'PY'
import resource, subprocess, sys, tempfile
d = tempfile.mkdtemp()
subprocess.run([sys.argv[1], "pack", "run", "map", "--inputs", "map-large.json", "--events", f"{d}/e.ndjson", "--dir", f"{d}/run"], check=True, stdout=subprocess.DEVNULL)
print(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}")
PY
)

python3 - "$seq_n" "$base_seq" "$stella_seq" "$map_n" "$base_map" "$stella_map" "$mem_n" "$peak" "$stella_seq_off" <<'PY'
import sys
seq_n, bs, ss, map_n, bm, sm, mem_n, peak, so = sys.argv[1:]
bs, ss, bm, sm, peak, so = map(float, (bs, ss, bm, sm, peak, so))
def verdict(ok): return "PASS" if ok else "MISS"
print(f"{'benchmark':<44} {'baseline':>10} {'stella':>10} {'ratio':>7}  target")
r1, r2 = ss / bs, sm / bm
print(f"{seq_n + ' sequential exec steps vs bash loop':<44} {bs*1000:>8.0f}ms {ss*1000:>8.0f}ms {r1:>6.2f}x  <= 1.5x {verdict(r1 <= 1.5)}")
print(f"{map_n + '-item map, maxParallel 2 vs xargs -P2':<44} {bm*1000:>8.0f}ms {sm*1000:>8.0f}ms {r2:>6.2f}x  <= 1.3x {verdict(r2 <= 1.3)}")
print(f"{'peak RSS of a ' + mem_n + '-step map run':<44} {'':>10} {peak:>7.1f}MiB {'':>7}  < 50 MiB {verdict(peak < 50)}")
print(f"{seq_n + ' sequential steps, sandbox off vs on':<44} {so*1000:>8.0f}ms {ss*1000:>8.0f}ms {ss/so:>6.2f}x  (the sandbox's cost)")
print(f"per step: stella {ss/int(seq_n)*1e6:.0f} us (sandbox off {so/int(seq_n)*1e6:.0f} us), bare spawn {bs/int(seq_n)*1e6:.0f} us")
PY
