#!/usr/bin/env bash
# The audit export and resume (issue 15): builds a ledger of N trivial runs with the runner
# itself (requests committed in batches of 50, each batch carried out by `stella daemon
# --once`), then measures, median of 3 each:
#   `stella runs export --since T --until T --ndjson` over the whole history (every run read)
#   the same over the window of the last batch only (runs before it skipped unread, from what
#            the scan and the runs index know of each run's first and last event times)
#   the same again without the runs index (STELLA_RUNNER_KEY=/nonexistent: every run read
#            from git to learn its times)
#   and checks each export's manifest digest against its lines.
# Then one run of a 20-step pack that fails at its last step, resumed: the resumed run's time
# from commit to final event against the failed run's (19 steps reused, one run).
# Usage: bench/audit.sh [--runs N] [--keep DIR]   (default N = 500)
# Needs bash, git, python3 (and cargo, unless STELLA_BIN names a built stella binary).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: bench/audit.sh [--runs N] [--keep DIR]" >&2; exit 2; }
runs=500 keep=
while (($#)); do
  case $1 in
    --runs)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage
      runs=$2
      shift 2
      ;;
    --keep)
      [[ -n ${2:-} ]] || usage
      keep=$2
      shift 2
      ;;
    *) usage ;;
  esac
done
source bench/lib.sh
bench_needs git python3

if [[ -n $keep ]]; then
  mkdir -p "$keep"
  work=$(cd "$keep" && pwd)
else
  mkdir -p target
  work=$(mktemp -d "$PWD/target/audit.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export XDG_STATE_HOME=$work/state
export STELLA=$stella WORK=$work RUNS=$runs

python3 - << 'PY'
import hashlib, json, os, statistics, subprocess, time

STELLA, WORK, N = os.environ["STELLA"], os.environ["WORK"], int(os.environ["RUNS"])
REPO = os.path.join(WORK, "repo")
GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false", "-c", "gc.auto=0"]


def sh(*args, **kw):
    return subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True, **kw)


def shard(i):
    return hashlib.sha256(i.encode()).hexdigest()[:2]


def write(rel, text):
    path = os.path.join(REPO, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def request(rid, pack, extra=""):
    write(f"runs/_{shard(rid)}/{rid}/request.yaml", f"apiVersion: stella/v1\nkind: RunRequest\npack: packs/{pack}\n{extra}")


def median_time(args, env=None):
    times, out = [], None
    for _ in range(3):
        t0 = time.monotonic()
        out = sh(*args, env=env)
        times.append(time.monotonic() - t0)
    return statistics.median(times), out


os.makedirs(REPO)
sh("git", "init", "-q", "-b", "main")
sh(STELLA, "init", ".")
write(".stella/config.yaml", "branch: main\n")
write("packs/true/pack.yaml", "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: true, version: 1.0.0 }\nspec:\n  steps:\n    - { id: t, run: { uses: builtin:exec, with: { argv: [/bin/true] } } }\n")
steps = "".join(f"    - {{ id: s{i}, run: {{ uses: builtin:exec, with: {{ argv: [/bin/true] }} }} }}\n" for i in range(19))
steps += f"    - {{ id: last, run: {{ uses: builtin:shell, with: {{ script: \"test -e {WORK}/fixed\" }} }} }}\n"
write("packs/long/pack.yaml", "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: long, version: 1.0.0 }\nspec:\n  steps:\n" + steps)
sh(*GIT, "add", "-A")
sh(*GIT, "commit", "-qm", "init")
last_batch_start = None
for start in range(0, N, 50):
    if start + 50 >= N:
        time.sleep(1.1)
        last_batch_start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        time.sleep(1.1)
    for i in range(start, min(N, start + 50)):
        request(f"a{i:06d}", "true")
    sh(*GIT, "add", "-A")
    sh(*GIT, "commit", "-qm", f"batch {start}")
    sh(STELLA, "daemon", "--once", "--repo", ".")
print(f"ledger: {N} runs; git {sh('git', 'rev-list', '--count', 'HEAD').stdout.strip()} commits")


def export(since, until, label, env=None):
    secs, out = median_time([STELLA, "runs", "export", "--since", since, "--until", until, "--ndjson"], env)
    lines = out.stdout.splitlines()
    manifest = json.loads(lines[-1])
    body = "".join(l + "\n" for l in lines[:-1])
    assert manifest["sha256"] == hashlib.sha256(body.encode()).hexdigest(), "manifest digest"
    print(f"export {label}: {secs:.3f} s median of 3; {manifest['events']} events of {manifest['runs']} runs; stderr: {out.stderr.strip()}")


export("2000-01-01", "2100-01-01", "whole history")
export(last_batch_start, "2100-01-01", "last batch only")
# Without the runs index (no runner key to open it with): every run's events are read from git.
export(last_batch_start, "2100-01-01", "last batch only, no runs index", dict(os.environ, STELLA_RUNNER_KEY="/nonexistent"))

# Resume: a 20-step run failing at its last step, then resumed.
def run_and_time(rid, extra=""):
    request(rid, "long", extra)
    sh(*GIT, "add", "-A")
    sh(*GIT, "commit", "-qm", f"request {rid}")
    t0 = time.monotonic()
    sh(STELLA, "daemon", "--once", "--repo", ".")
    return time.monotonic() - t0


failed = run_and_time("long-1")
open(os.path.join(WORK, "fixed"), "w").close()
resumed = run_and_time("long-2", "resumeOf: long-1\n")
show = json.loads(sh(STELLA, "runs", "show", "long-2", "--json").stdout)
reused = sum(1 for s in show["steps"] if s.get("reusedFrom"))
print(f"resume: failed run (20 steps run) {failed:.2f} s; resumed run ({reused} steps reused, {show['state']}) {resumed:.2f} s; daemon --once each")
PY
