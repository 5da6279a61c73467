#!/usr/bin/env bash
# The cost of a separate ledger branch against one branch, in CPU seconds (user+sys of the
# process and its children, /usr/bin/time), on a scratch repository with N one-step runs
# (builtin:exec /bin/true) requested in one commit:
#   1. `stella daemon --once` executing the N runs;
#   2. `stella daemon --once` for one more request (with a ledger branch: one take-in merge
#      on an N-run ledger, plus the start-up check);
#   3. `stella ledger verify` of the result.
# Each figure for `branch: main` alone and for `ledger: { branch: stella/ledger }`.
# Usage: bench/ledger-branch.sh [N]   (default 300)
# Needs bash, git, bc and /usr/bin/time (and cargo, unless STELLA_BIN names a built stella).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
source bench/lib.sh
bench_needs git bc /usr/bin/time
cpu() { /usr/bin/time -f "%U+%S" "$@" 2>&1 > /dev/null | tail -1 | bc; }
commit() { git -c user.name=bench -c user.email=bench@example.com -c commit.gpgsign=false commit -qm "$1"; }
request() {
  local id=$1 shard
  shard=$(printf %s "$id" | sha256sum | cut -c1-2)
  mkdir -p "runs/_$shard/$id"
  printf 'apiVersion: stella/v1\nkind: RunRequest\npack: packs/t\n' > "runs/_$shard/$id/request.yaml"
}
one() {
  local mode=$1 d
  d=$(mktemp -d)
  (
    cd "$d"
    git init -q -b main .
    "$stella" init . > /dev/null
    printf 'branch: main\ncommit: { batchMs: 60000 }\nlimits: { maxRuns: 4 }\n' > .stella/config.yaml
    mkdir -p packs/t
    printf 'apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  steps:\n    - id: s\n      run: { uses: builtin:exec, with: { argv: [/bin/true] } }\n' > packs/t/pack.yaml
    git add -A && commit init
    if [[ $mode == ledger ]]; then
      "$stella" init . --ledger-branch stella/ledger > /dev/null
      git add -A && commit "ledger branch"
    fi
    for i in $(seq 1 "$n"); do request "$(printf 'r%05d' "$i")"; done
    git add -A && commit requests
    local all more verify
    all=$(cpu "$stella" daemon --once --repo .)
    request one-more && git add -A && commit "one more"
    more=$(cpu "$stella" daemon --once --repo .)
    verify=$(cpu "$stella" ledger verify)
    [[ -z $(git status --porcelain) ]] || { echo "bench: the working tree is not clean" >&2; exit 1; }
    printf '| %s | %s | %s | %s |\n' "$mode" "$all" "$more" "$verify"
  )
  rm -rf "$d"
}
echo "N = $n runs; CPU seconds"
echo "| mode | daemon --once, N runs | daemon --once, one more | ledger verify |"
echo "|---|---|---|---|"
one same
one ledger
