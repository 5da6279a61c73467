#!/usr/bin/env bash
# Stella quick start: builds the `stella` binary, walks through the pack commands
# (validating packs, planning one with inputs, what a broken pack's errors look like), then
# runs the whole repository flow in a throw-away git repository: stella init, a run request,
# the daemon, the ledger it commits, and the checks on it (stella ledger verify, git
# verify-commit). Needs cargo, git, bash, python3 and ssh-keygen (git verifies SSH
# signatures with it). Run it from anywhere: ./quickstart.sh
#
# Each section is a function; later steps of the demo (signed approvals, evidence, sync)
# are added as new sections.
set -euo pipefail
cd "$(dirname "$0")"

export PATH="$PWD/target/release:$PATH"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
section() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
show() {
  local arg shown=()
  for arg in "$@"; do
    if [[ $arg == *[[:space:]\;]* ]]; then shown+=("\"$arg\""); else shown+=("$arg"); fi
  done
  printf '$ %s\n' "${shown[*]}"
  "$@"
}

build() {
  section "1. Build"
  show cargo build --release -q
  show stella --version
}

validate_examples() {
  section "2. Validate the example packs"
  for pack in packs/sbom-remediation packs/parallel-checks packs/bundle-ingest; do
    show stella pack validate "$pack"
  done
}

plan_example() {
  section "3. Plan sbom-remediation with its example inputs"
  show cat examples/sbom-remediation.inputs.yaml
  show stella pack plan packs/sbom-remediation --inputs examples/sbom-remediation.inputs.yaml
  echo
  echo "The same plan as JSON (first 30 lines): the summary, then the full plan."
  printf '$ %s\n' "stella pack plan packs/sbom-remediation --inputs examples/sbom-remediation.inputs.yaml --json | head -n 30"
  local json
  json=$(stella pack plan packs/sbom-remediation --inputs examples/sbom-remediation.inputs.yaml --json)
  head -n 30 <<<"$json"
  echo "  ... ($(wc -l <<<"$json") lines in all)"
}

broken_pack() {
  section "4. A broken pack: every problem at once, with file, line, column and field"
  mkdir -p "$scratch/packs/broken"
  cat > "$scratch/packs/broken/pack.yaml" <<'EOF'
apiVersion: stella/v1
kind: TaskPack
metadata: { name: broken, version: "0.1.0" }
spec:
  inputs:
    - { name: image, type: strng, required: true }
  steps:
    - id: scan
      run: { uses: builtin:shell, with: { script: "./scan.sh {{ inputs.imge }}" } }
      timeout: 10 minutes please
    - id: review
      gate: { approval: { id: security-review } }
EOF
  cat -n "$scratch/packs/broken/pack.yaml"
  local rc=0
  (cd "$scratch" && show stella pack validate packs/broken 2>&1) || rc=$?
  echo "exit code: $rc  (2 = bad input; 0 ok, 1 ran and failed, 3 waiting at a gate)"
  if [[ $rc -ne 2 ]]; then
    echo "quickstart: expected exit code 2 for the broken pack" >&2
    exit 1
  fi
}

demo_repository() {
  section "5. A watched repository: init, packs, first commit"
  demo="$scratch/demo"
  show git init -q -b main "$demo"
  show stella init "$demo"
  show cp -R packs/parallel-checks packs/sbom-remediation "$demo/packs/"
  # An identity for the demo's own commits, set in the demo repository only; commits there
  # are plain (a global commit.gpgsign would otherwise ask for a key).
  git -C "$demo" config user.name "Quickstart Demo"
  git -C "$demo" config user.email "demo@example.invalid"
  git -C "$demo" config commit.gpgsign false
  git -C "$demo" add -A
  show git -C "$demo" commit -q -m "stella init; example packs"
  show cat "$demo/.stella/allowed_signers"
}

# Where run $1 lives, and its approvals: its shard (docs/ledger.md#the-sharded-layout).
shard() { printf '_%s' "$(printf %s "$1" | sha256sum | cut -c1-2)"; }
run_dir() { printf 'runs/%s/%s' "$(shard "$1")" "$1"; }
approvals_dir() { printf 'approvals/%s/%s' "$(shard "$1")" "$1"; }

demo_run() {
  section "6. Request a run, commit it, let the daemon run it"
  printf '$ %s\n' "stella run request $demo/packs/parallel-checks --inputs examples/parallel-checks.inputs.yaml"
  run_id=$(stella run request "$demo/packs/parallel-checks" --inputs examples/parallel-checks.inputs.yaml)
  # A run lives in its shard: runs/_<first two hex digits of sha256(id)>/<id> (docs/ledger.md).
  show cat "$demo/$(run_dir "$run_id")/request.yaml"
  git -C "$demo" add "$(run_dir "$run_id")"
  show git -C "$demo" commit -q -m "request $run_id"
  show stella daemon --once --repo "$demo"
  show stella runs list --repo "$demo"
  show stella runs show "$run_id" --repo "$demo"
}

demo_ledger() {
  section "7. The ledger: signed runner commits on the branch, checked"
  show git -C "$demo" log --oneline
  show git -C "$demo" show --stat HEAD
  show stella runs logs "$run_id" --repo "$demo"
  show stella ledger verify --repo "$demo"
  local last
  last=$(git -C "$demo" log -1 --author=runner@stella.invalid --format=%H)
  show git -C "$demo" -c gpg.format=ssh -c gpg.ssh.allowedSignersFile=.stella/allowed_signers verify-commit "$last"
  echo "git status of the demo repository after the runner's commits (empty = clean):"
  show git -C "$demo" status --short
}

demo_gate() {
  section "8. A run that needs a secret and an approval: it waits at its gate until signed"
  # An approver: an SSH key listed for namespace stella-approval and granted Packs.Approve.
  # Trust changes must be committed *before* the request they should judge.
  ssh-keygen -q -t ed25519 -N '' -C alice -f "$scratch/alice"
  printf 'alice namespaces="stella-approval" %s\n' "$(cat "$scratch/alice.pub")" >> "$demo/.stella/allowed_signers"
  printf 'grants:\n  Packs.Approve: [alice]\n' > "$demo/.stella/approvers.yaml"
  git -C "$demo" add .stella
  show git -C "$demo" commit -q -m "alice may approve"
  # A request is judged by the trust files of the branch as the runner saw it before the
  # request arrived (so a pull request cannot bring its own approver): let the runner see
  # alice's commit first. A watching daemon does this by itself when the commits land apart.
  show stella daemon --once --repo "$demo"
  # The secret comes from a file outside the repository (never commit secrets).
  printf 'registryToken: quickstart-dummy-token\n' > "$scratch/secrets.yaml"
  printf '$ %s\n' "stella run request $demo/packs/sbom-remediation --inputs examples/sbom-remediation.inputs.yaml"
  gate_id=$(stella run request "$demo/packs/sbom-remediation" --inputs examples/sbom-remediation.inputs.yaml)
  git -C "$demo" add "$(run_dir "$gate_id")"
  show git -C "$demo" commit -q -m "request $gate_id"
  show stella daemon --once --repo "$demo" --secrets "$scratch/secrets.yaml"
  show stella runs list --repo "$demo"
  expect_state "$gate_id" waiting

  section "9. Approve with an SSH signature bound to the plan hash; the daemon passes the gate"
  show stella approve "$gate_id" --gate security-review --key "$scratch/alice" --comment "scan reviewed" --repo "$demo"
  git -C "$demo" add approvals
  show git -C "$demo" commit -q -m "alice approves $gate_id"
  show ssh-keygen -Y verify -f "$demo/.stella/allowed_signers" -I alice -n stella-approval \
    -s "$demo/$(approvals_dir "$gate_id")/security-review/alice.yaml.sig" < "$demo/$(approvals_dir "$gate_id")/security-review/alice.yaml"
  show stella daemon --once --repo "$demo" --secrets "$scratch/secrets.yaml"
  show stella runs show "$gate_id" --repo "$demo"
  expect_state "$gate_id" succeeded

  section "10. Evidence: a signed in-toto attestation, exported and verified offline"
  show stella runs export "$gate_id" -o "$scratch/evidence.tar.gz" --repo "$demo"
  show stella evidence verify "$scratch/evidence.tar.gz"
  show stella ledger verify --repo "$demo"
}

demo_air_gap() {
  section "11. Across an air gap: a git bundle, checked before it moves anything"
  # An offline site holds the repository as it was before the gated run.
  local offline="$scratch/offline" before
  before=$(git -C "$demo" rev-parse "HEAD~3")
  git -C "$demo" branch -q site-b-base "$before"
  git clone -q --no-local --single-branch --branch site-b-base "$demo" "$offline"
  git -C "$demo" branch -q -D site-b-base
  git -C "$offline" checkout -q -b main
  git -C "$offline" branch -q -D site-b-base
  show stella sync export -o "$scratch/site-b.bundle" --to site-b --since "$before" --repo "$demo"
  # A bundle cut short in transit is refused, and the offline repository is left as it was.
  head -c 2000 "$scratch/site-b.bundle" > "$scratch/truncated.bundle"
  printf '$ %s\n' "stella sync import $scratch/truncated.bundle --repo $offline"
  if stella sync import "$scratch/truncated.bundle" --repo "$offline"; then
    echo "quickstart: a truncated bundle was accepted" >&2
    exit 1
  fi
  show git -C "$offline" log --oneline -1
  # The whole bundle: a fast-forward whose ledger verifies, so the branch moves.
  show stella sync import "$scratch/site-b.bundle" --repo "$offline"
  show stella ledger verify --repo "$offline"
}

expect_state() {
  local state
  state=$(stella runs list --repo "$demo" --json |
    python3 -c 'import json,sys; print({r["id"]: r["state"] for r in json.load(sys.stdin)}[sys.argv[1]])' "$1")
  if [[ $state != "$2" ]]; then
    echo "quickstart: expected $1 to be $2, found $state" >&2
    exit 1
  fi
}

next_steps() {
  section "What comes next"
  cat <<EOF
Working today: stella pack validate|plan|run; in a repository stella init, stella run
request, stella approve, stella daemon, stella runs list|show|logs|cancel|export, stella
ledger verify, stella evidence verify, stella doctor. Runner commits are SSH-signed and
verify with stock git; evidence verifies with any DSSE implementation. A local run without git (the secret is a
dummy; approvals are waived locally):
  STELLA_SECRET_REGISTRYTOKEN=dummy target/release/stella pack run packs/sbom-remediation \\
      --inputs examples/sbom-remediation.inputs.yaml --approve-local
Several runners on one git server, pull requests planned and noted: stella daemon
--remote origin (docs/remote.md). Sealed sites: stella sync export|import (docs/air-gap.md).
The demo repository ($demo) is removed when this script exits.
Read next: README.md, ARCHITECTURE.md, docs/ledger.md, docs/daemon.md, docs/approvals.md, docs/evidence.md, docs/remote.md, docs/air-gap.md.
EOF
}

build
validate_examples
plan_example
broken_pack
demo_repository
demo_run
demo_ledger
demo_gate
demo_air_gap
next_steps
