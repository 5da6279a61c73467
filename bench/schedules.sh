#!/usr/bin/env bash
# Schedule benchmarks on scratch repositories, each figure next to its target:
#   1. slot -> first step: a schedule firing every 2 s (`*/2 * * * * *`, concurrency allow)
#      and a watching daemon (`--poll 30s`, so only the schedule's own wake-up fires it);
#      latency of each run = ts of its `step.started` in .git/stella/journal/<run>.ndjson
#      minus its slot (the run id's stamp). N slots after one warm-up slot.
#                                        target: median <= 1 s
#   2. an idle daemon (watch mode, --poll 5s) with 50 daily schedules (03:MM local in ten
#      zones): CPU (utime+stime of it and its reaped children, from
#      /proc/<pid>/stat) over S seconds, per minute     target < 0.1 s per minute
#      baseline: the same daemon, same repository, without the schedules file.
# Usage: bench/schedules.sh [--quick]   (--quick: 5 slots, 10 s idle; for CI)
# Needs bash, git and python3 (and cargo, unless STELLA_BIN names a built stella binary).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
case "${1:-}" in
  --quick) quick=true ;;
  "") ;;
  *) echo "usage: bench/schedules.sh [--quick]" >&2; exit 2 ;;
esac
slots=20; idle_s=60
if $quick; then slots=5; idle_s=10; fi

source bench/lib.sh
bench_needs git python3

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null

STELLA=$stella WORK=$work SLOTS=$slots IDLE_S=$idle_s python3 - <<'PY'
import json, os, signal, statistics, subprocess, time, datetime

STELLA, WORK = os.environ["STELLA"], os.environ["WORK"]
SLOTS, IDLE_S = int(os.environ["SLOTS"]), int(os.environ["IDLE_S"])
GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false", "-c", "gc.auto=0"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "Europe/London",
         "America/Los_Angeles", "Asia/Kolkata", "America/Sao_Paulo", "Africa/Johannesburg"]


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def repo(name, schedules):
    d = os.path.join(WORK, name)
    os.makedirs(os.path.join(d, "packs", "true"))
    sh(GIT + ["init", "-q", "-b", "main"], d)
    sh([STELLA, "init", "."], d)
    with open(os.path.join(d, ".stella", "config.yaml"), "w") as f:
        f.write("branch: main\nlimits: { maxRuns: 4 }\ncommit: { batchMs: 2000 }\n")
    with open(os.path.join(d, "packs", "true", "pack.yaml"), "w") as f:
        f.write('apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: "true", version: "1.0.0" }\n'
                'spec:\n  steps:\n    - { id: t, run: { uses: builtin:exec, with: { argv: [/bin/true] } } }\n')
    if schedules:
        with open(os.path.join(d, ".stella", "schedules.yaml"), "w") as f:
            f.write(schedules)
    sh(GIT + ["add", "-A"], d)
    sh(GIT + ["commit", "-q", "-m", "init"], d)
    return d


def daemon(d, poll):
    return subprocess.Popen([STELLA, "daemon", "--repo", ".", "--poll", poll], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(p):
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=30)


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# 1. slot -> first step
d = repo("latency", "schedules:\n  - id: tick\n    cron: \"*/2 * * * * *\"\n    pack: packs/true\n    concurrency: allow\n")
p = daemon(d, "30s")
journal = os.path.join(d, ".git", "stella", "journal")
lat = {}
deadline = time.monotonic() + 30 + 4 * SLOTS
while len(lat) < SLOTS + 1 and time.monotonic() < deadline:
    time.sleep(0.5)
    for name in sorted(os.listdir(journal)) if os.path.isdir(journal) else []:
        run = name[:-len(".ndjson")]
        if run in lat or not run.startswith("tick-"):
            continue
        stamp = run[len("tick-"):]
        slot = datetime.datetime.strptime(stamp, "%Y%m%dt%H%M%Sz").replace(tzinfo=datetime.timezone.utc).timestamp()
        with open(os.path.join(journal, name)) as f:
            for line in f:
                e = json.loads(line)
                if e.get("type") == "step.started":
                    lat[run] = ts(e["ts"]) - slot
                    break
stop(p)
runs = sorted(lat)[1:SLOTS + 1]  # the first slot is the warm-up
xs = sorted(lat[r] * 1000 for r in runs)
if len(xs) < SLOTS:
    raise SystemExit(f"only {len(xs)} of {SLOTS} slots ran")
print(f"slot -> first step, {len(xs)} slots every 2 s: median {statistics.median(xs):.0f} ms, "
      f"p90 {xs[int(0.9 * (len(xs) - 1))]:.0f} ms, max {xs[-1]:.0f} ms   (target: median <= 1000 ms)")


# 2. idle CPU with 50 schedules
def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick


def idle(d):
    p = daemon(d, "5s")
    time.sleep(3)  # start-up and the first scan
    c0 = cpu(p.pid)
    time.sleep(IDLE_S)
    c1 = cpu(p.pid)
    stop(p)
    return (c1 - c0) * 60 / IDLE_S


many = "schedules:\n" + "".join(
    f"  - id: daily-{i:02}\n    cron: \"{i % 60} 3 * * *\"\n    timezone: {ZONES[i % len(ZONES)]}\n    pack: packs/true\n"
    for i in range(50))
d = repo("idle", many)
with_schedules = idle(d)
os.remove(os.path.join(d, ".stella", "schedules.yaml"))
sh(GIT + ["commit", "-q", "-am", "no schedules"], d)
without = idle(d)
print(f"idle daemon, {IDLE_S} s: 50 schedules {with_schedules:.3f} s CPU per minute, "
      f"no schedules {without:.3f} s   (target: < 0.1 s per minute)")
PY
