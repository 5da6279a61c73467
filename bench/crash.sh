#!/usr/bin/env bash
# Crash safety: a runner (`stella daemon --remote origin` on a clone of a bare hub) is killed
# again and again while it carries runs of a pack with sequential steps, artifacts, a parallel
# group and an approval gate (half the runs approved up front with a signed approval, half once
# they wait); it is restarted each time, and at the end the runs, the ledger and git are proved
# whole. Kill points, 2N of them:
#   - N with `--chaos` naming one point in turn (before-step-start, after-step-start,
#     before-step-end, after-step-end, between-branch-move-and-index-update, mid-commit,
#     mid-push; `after:` 0 or 1, so not always the first occurrence);
#   - N plain `kill -9` after a random 0-2 s.
# A chaos iteration whose point is not reached within 10 s is stopped with SIGTERM and not
# counted. Runs are added whenever all requested ones have finished, so every kill has work.
# Then the daemon runs (`--once`, no chaos) until every run is done, and the script checks:
#   L  runs not succeeded (every run of this pack should succeed), per `stella runs list --json`
#   D  two attempts of the same step of the same run that overlapped in time: each attempt
#      appends `start`/`end` marks (run, step, token, pid, time) to a log outside the repository
#      under flock; an attempt without an end died with its runner, at the latest when that
#      runner's life ended (the script records each life)
#   V  `stella ledger verify` problems in the runner's clone, plus runner paths whose working
#      tree or index differ from HEAD (`git status --porcelain -- runs`)
#   F  `git fsck --strict` errors in the runner's clone and the hub (dangling objects are fine)
# and ends with exactly the line
#   crash: N points, L lost, D concurrent duplicates, V verify failures, F fsck errors
# exiting 1 when any of L, D, V, F is not 0.
# Usage: bench/crash.sh [--points N]   (default 20; 100 is the acceptance figure; 5 is quick)
# CRASH_KEEP=1 keeps the scratch directory (repositories, marks, daemon log) for a look.
# Needs bash, git, python3, ssh-keygen, flock (and cargo, unless STELLA_BIN names a built stella).
set -euo pipefail
cd "$(dirname "$0")/.."

points=20
while (($#)); do
  case $1 in
    --points)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "usage: bench/crash.sh [--points N]" >&2; exit 2; }
      points=$2
      shift 2
      ;;
    *) echo "usage: bench/crash.sh [--points N]" >&2; exit 2 ;;
  esac
done
source bench/lib.sh
bench_needs git python3 ssh-keygen flock

# Not under /tmp: each sandboxed step has a /tmp of its own, and the steps append their
# marks to a log in here.
mkdir -p target
work=$(mktemp -d "$PWD/target/crash.XXXXXX")
daemon_pid=
cleanup() {
  if [[ -n $daemon_pid ]]; then kill -KILL "$daemon_pid" 2> /dev/null || true; fi
  # Steps that outlived a killed runner may still write here for a moment.
  sleep 1
  if [[ -n ${CRASH_KEEP:-} ]]; then echo "crash: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
now() { date +%s.%N; }
hub=$work/hub admin=$work/admin runner=$work/runner marks=$work/marks.log lives=$work/lives.log
: > "$marks"
: > "$lives"

# --- the repositories: a bare hub, an admin clone (people), a runner clone -----------------
git init -q --bare -b main "$hub"
git init -q -b main "$admin"
(cd "$admin" && "$stella" init . > /dev/null)
ssh-keygen -q -t ed25519 -N '' -C alice -f "$work/alice"
printf 'alice namespaces="stella-approval" %s\n' "$(cat "$work/alice.pub")" >> "$admin/.stella/allowed_signers"
printf 'grants:\n  Packs.Approve: [alice]\n' > "$admin/.stella/approvers.yaml"
printf 'branch: main\ncommit: { batchMs: 300 }\nlimits: { maxRuns: 2 }\n' > "$admin/.stella/config.yaml"
mkdir -p "$admin/packs/crash"
cat > "$admin/packs/crash/mark.sh" << 'EOF'
# mark.sh NAME SECONDS: one attempt of a step, recorded in the marks log outside the repository:
# "start RUN STEP TOKEN PID TIME" before the work, "end ..." after it. Nothing is written to
# stdout before the end mark, so a step left behind by a killed runner is not ended by SIGPIPE.
set -euo pipefail
log=$STELLA_INPUT_MARKS
token=$RANDOM$RANDOM$RANDOM-$$
mark() {
  { flock 9; printf '%s %s %s %s %s %s\n' "$1" "$STELLA_RUN_ID" "$STELLA_STEP_ID" "$token" "$$" "$(date +%s.%N)" >&9; } 9>> "$log"
}
mark start
sleep "$2"
mark end
echo "$1 done"
EOF
cat > "$admin/packs/crash/pack.yaml" << 'EOF'
apiVersion: stella/v1
kind: TaskPack
metadata: { name: crash, version: 1.0.0 }
spec:
  inputs:
    - { name: marks, type: string, required: true }
    - { name: n, type: string, default: "0" }
  approvals:
    - { id: go, grants: [Packs.Approve], requiredCount: 1 }
  steps:
    - id: prepare
      outputs: { report: report.txt }
      run: { uses: builtin:shell, with: { script: "bash mark.sh prepare 0.3; echo prepared > report.txt; echo items=3 >> $STELLA_OUTPUT" } }
    - id: checks
      parallel:
        maxParallel: 2
        steps:
          - { id: lint, run: { uses: builtin:shell, with: { script: "bash mark.sh lint 0.4" } } }
          - { id: test, run: { uses: builtin:shell, with: { script: "bash mark.sh test 2" } } }
          - id: scan
            outputs: { findings: findings.txt }
            run: { uses: builtin:shell, with: { script: "bash mark.sh scan 0.2; echo none > findings.txt" } }
    - id: review
      gate: { approval: { id: go, message: "publish run {{ inputs.n }}?" } }
    - id: publish
      outputs: { bundle: bundle.txt }
      run: { uses: builtin:shell, with: { script: "bash mark.sh publish 0.3; echo bundle {{ steps.prepare.outputs.items }} > bundle.txt" } }
EOF
git -C "$admin" add -A
git -C "$admin" commit -q -m "crash bench: pack, approver"
git -C "$admin" remote add origin "$hub"
git -C "$admin" push -q origin main
git clone -q "$hub" "$runner"
(cd "$runner" && "$stella" init . > /dev/null)
git -C "$runner" add .stella
git -C "$runner" commit -q -m "trust the runner"
git -C "$runner" push -q origin main
git -C "$admin" pull -q --ff-only origin main

# --- people's side: requests and approvals, pushed to the hub ----------------------------
requested=()
next_run=1
push_admin() {
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if git -C "$admin" pull -q --rebase origin main 2> /dev/null && git -C "$admin" push -q origin main 2> /dev/null; then
      return 0
    fi
    sleep 0.3
  done
  echo "crash: cannot push to the hub" >&2
  exit 2
}
approve() {
  local out
  out=$("$stella" approve "$1" --gate go --key "$work/alice" --repo "$admin" 2>&1) || {
    echo "crash: cannot approve $1: $out" >&2
    exit 2
  }
}
# Two new runs; the one with an even number is approved before it reaches the gate.
request_more() {
  local k id ids=()
  for k in 1 2; do
    id=$(printf 'c%03d' "$next_run")
    mkdir -p "$admin/runs/$id"
    printf 'apiVersion: stella/v1\nkind: RunRequest\npack: packs/crash\ninputs: { marks: "%s", n: "%d" }\n' "$marks" "$next_run" > "$admin/runs/$id/request.yaml"
    ids+=("$id")
    requested+=("$id")
    next_run=$((next_run + 1))
  done
  git -C "$admin" add runs
  git -C "$admin" commit -q -m "request ${ids[*]}"
  for id in "${ids[@]}"; do
    if ((10#${id#c} % 2 == 0)); then approve "$id"; fi
  done
  git -C "$admin" add -A
  git -C "$admin" commit -q --allow-empty -m "approve what is ready"
  push_admin
}
# Run states as the runner's clone (ledger and journals) knows them: "id state" lines.
states() {
  "$stella" runs list --json --repo "$runner" 2> /dev/null |
    python3 -c 'import json,sys; [print(r["id"], r["state"]) for r in json.load(sys.stdin)]' || true
}
# How many requested runs are not finished, and approvals for those waiting without one.
unfinished=0
survey() {
  local st line id state approved=0
  st=$(states)
  unfinished=0
  for id in "${requested[@]}"; do
    state=$(awk -v id="$id" '$1 == id { print $2 }' <<< "$st")
    case $state in
      succeeded | failed | cancelled) ;;
      waiting)
        unfinished=$((unfinished + 1))
        if [[ ! -e $admin/approvals/$id/go/alice.yaml ]]; then
          approve "$id"
          approved=1
        fi
        ;;
      *) unfinished=$((unfinished + 1)) ;;
    esac
  done
  if ((approved)); then
    git -C "$admin" add -A
    git -C "$admin" commit -q -m "alice approves the waiting runs"
    push_admin
  fi
}

# --- the kill loop --------------------------------------------------------------------------
chaos_points=(before-step-start after-step-start before-step-end after-step-end
  between-branch-move-and-index-update mid-commit mid-push)
# The daemon in the background, disowned: bash would otherwise report each SIGKILL it takes.
start_daemon() {
  "$stella" daemon --repo "$runner" --remote origin --poll 1s "$@" >> "$work/daemon.log" 2>&1 &
  daemon_pid=$!
  disown "$daemon_pid"
}
gone() { ! kill -0 "$daemon_pid" 2> /dev/null; }
request_more
request_more
exercised=0
unreached=()
started=$(now)
for ((i = 1; i <= 2 * points; i++)); do
  survey
  if ((unfinished == 0)); then request_more; fi
  t0=$(now)
  if ((i <= points)); then
    point=${chaos_points[$(((i - 1) % ${#chaos_points[@]}))]}
    printf 'seed: %d\nrules:\n  - { action: kill-runner, point: %s, after: %d, times: 1 }\n' \
      "$i" "$point" "$((RANDOM % 2))" > "$work/chaos.yaml"
    start_daemon --chaos "$work/chaos.yaml"
    deadline=$(($(date +%s) + 10))
    until gone || (($(date +%s) >= deadline)); do sleep 0.05; done
    # Only a kill ends a watching daemon (nothing else stops it before the deadline).
    if gone; then
      exercised=$((exercised + 1))
    else
      unreached+=("$point")
      kill -TERM "$daemon_pid"
      until gone; do sleep 0.05; done
    fi
  else
    start_daemon
    sleep "$(python3 -c 'import random; print(random.uniform(0, 2))')"
    kill -KILL "$daemon_pid" 2> /dev/null || true
    until gone; do sleep 0.02; done
    exercised=$((exercised + 1))
  fi
  daemon_pid=
  echo "$t0 $(now)" >> "$lives"
done

# --- finish every run -----------------------------------------------------------------------
for ((round = 1; round <= 30; round++)); do
  survey
  ((unfinished == 0)) && break
  t0=$(now)
  "$stella" daemon --repo "$runner" --remote origin --once >> "$work/daemon.log" 2>&1 || true
  echo "$t0 $(now)" >> "$lives"
done
# Let steps that outlived their runner end before their marks are read.
sleep 1.5
survey
elapsed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$started" "$(now)")

# --- the proof ------------------------------------------------------------------------------
lost=0
st=$(states)
for id in "${requested[@]}"; do
  state=$(awk -v id="$id" '$1 == id { print $2 }' <<< "$st")
  if [[ $state != succeeded ]]; then
    lost=$((lost + 1))
    echo "crash: run $id is ${state:-absent}" >&2
  fi
done
dups=$(python3 - "$marks" "$lives" << 'EOF'
import sys
marks, lives = sys.argv[1], sys.argv[2]
life = [tuple(map(float, l.split())) for l in open(lives) if l.strip()]
attempts = {}
for line in open(marks):
    parts = line.split()
    if len(parts) != 6:
        continue
    kind, run, step, token, pid, t = parts
    a = attempts.setdefault(token, {"run": run, "step": step, "pid": pid})
    a[kind] = float(t)
def died_by(start):
    # An attempt without an end mark died with the runner whose life held its start.
    ends = [e for s, e in life if s <= start <= e]
    return min(ends) if ends else float("inf")
by_step = {}
for a in attempts.values():
    if "start" not in a:
        continue
    a.setdefault("end", died_by(a["start"]))
    by_step.setdefault((a["run"], a["step"]), []).append(a)
dups = 0
for (run, step), xs in sorted(by_step.items()):
    xs.sort(key=lambda a: a["start"])
    for i, a in enumerate(xs):
        for b in xs[i + 1:]:
            if b["start"] < a["end"]:
                dups += 1
                print(f"crash: {run} {step}: pid {a['pid']} ran {a['start']:.3f}-{a['end']:.3f}, pid {b['pid']} started {b['start']:.3f}", file=sys.stderr)
print(dups)
EOF
)
verify=0
if ! out=$("$stella" ledger verify --repo "$runner" --json 2> /dev/null); then
  n=$(python3 -c 'import json,sys
try: print(max(1, len(json.loads(sys.stdin.read()).get("problems", []))))
except Exception: print(1)' <<< "$out")
  verify=$((verify + n))
  echo "crash: ledger verify: $out" | head -20 >&2
fi
dirty=$(git -C "$runner" status --porcelain -- runs | wc -l)
if ((dirty > 0)); then
  verify=$((verify + dirty))
  echo "crash: runner paths differ from HEAD in the working tree or index:" >&2
  git -C "$runner" status --porcelain -- runs | head -10 >&2
fi
fsck=0
for repo in "$runner" "$hub"; do
  if ! out=$(git -C "$repo" fsck --strict --no-progress 2>&1); then
    n=$(grep -cvE '^(dangling|notice)' <<< "$out" || true)
    fsck=$((fsck + (n > 0 ? n : 1)))
    echo "crash: git fsck $repo:" >&2
    grep -vE '^(dangling|notice)' <<< "$out" | head -10 >&2
  fi
done
echo "crash: ${#requested[@]} runs, $((2 * points)) daemon lives killed or stopped in ${elapsed}s; chaos points not reached: ${unreached[*]:-none}" >&2
echo "crash: $exercised points, $lost lost, $dups concurrent duplicates, $verify verify failures, $fsck fsck errors"
((lost == 0 && dups == 0 && verify == 0 && fsck == 0))
