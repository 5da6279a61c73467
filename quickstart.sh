#!/usr/bin/env bash
# Stella quick start: builds the `stella` binary and walks through the pack commands —
# validating packs, planning one with inputs, and what a broken pack's errors look like.
# Needs only cargo (and bash). Run it from anywhere: ./quickstart.sh
#
# Each section is a function; later steps of the demo (a git repository, a run request,
# signed approvals, the daemon, the ledger, evidence) are added as new sections.
set -euo pipefail
cd "$(dirname "$0")"

export PATH="$PWD/target/release:$PATH"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
section() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
show() { printf '$ %s\n' "$*"; "$@"; }

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

next_steps() {
  section "What comes next"
  cat <<'EOF'
Working today: stella pack validate, stella pack plan, and stella pack run (runs a pack on
this machine, without git). Try it (the secret is a dummy; approvals are waived locally):
  STELLA_SECRET_REGISTRYTOKEN=dummy target/release/stella pack run packs/sbom-remediation \
      --inputs examples/sbom-remediation.inputs.yaml --approve-local
Coming next, and added to this script as they land:
  - stella init / run request / approve: a git repository with run requests and signed approvals
  - stella daemon: watch the repository, plan, wait for approvals, execute, commit the ledger
  - stella evidence verify / ledger verify: DSSE evidence and an append-only ledger, checked offline
  - stella sync export|import: carry the repository across an air gap with git bundle
Read next: README.md, ARCHITECTURE.md, docs/packs.md, docs/plan.md.
EOF
}

build
validate_examples
plan_example
broken_pack
next_steps
