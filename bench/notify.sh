#!/usr/bin/env bash
# Notification benchmarks on scratch repositories, with the tests' receiver
# (watcher/tests/webhook_receiver.py: Python's http.server, every signature checked with the
# PyPI standardwebhooks package) on loopback:
#   1. latency: one run of a pack of N steps of `sleep 0.2` (so events come at a step's pace,
#      not as one burst), a target for `step.*` (2 notifications a step); latency = the
#      receiver's arrival time - the event's `time` (the ts the runner gave it, milliseconds).
#                                        target: median < 50 ms
#   2. backlog: M steps of `/bin/true` while nothing listens (2*M notifications queue up, 1,000
#      by default), the daemon's resident memory (VmRSS, VmHWM) and the outbox on disk once all
#      are queued; then the receiver starts and the time until the last one arrives.
#                                        target: < 10 MB for the queue, all within 60 s
#      baseline: the same daemon's VmHWM after the latency run (nothing waiting).
# Usage: bench/notify.sh [--quick]   (--quick: 10 and 100 steps)
# Needs bash, git, python3 with standardwebhooks ($STELLA_PYTHON, else target/ci-venv as
# test.sh prepares it), and cargo unless STELLA_BIN names a built stella binary.
set -euo pipefail
cd "$(dirname "$0")/.."

n=50; m=500
case "${1:-}" in
  --quick) n=10; m=100 ;;
  "") ;;
  *) echo "usage: bench/notify.sh [--quick]" >&2; exit 2 ;;
esac

source bench/lib.sh
bench_needs git python3
py=${STELLA_PYTHON:-$PWD/target/ci-venv/bin/python3}
"$py" -c 'import standardwebhooks' 2> /dev/null || { echo "bench: $py lacks standardwebhooks (run test.sh once)" >&2; exit 2; }

work=$(mktemp -d)
cleanup() {
  local pid
  for pid in $(cat "$work/pids" 2> /dev/null); do kill -KILL "$pid" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export STELLA_SECRET_BENCH_KEY=whsec_c3RlbGxhLWJlbmNoLWtleS0wMTIzNDU2Nzg5
receiver=$PWD/watcher/tests/webhook_receiver.py

STELLA=$stella WORK=$work PY=$py RECEIVER=$receiver N=$n M=$m "$py" - <<'PY'
import datetime, json, os, socket, statistics, subprocess, time

STELLA, WORK, PY, RECEIVER = (os.environ[k] for k in ["STELLA", "WORK", "PY", "RECEIVER"])
N, M = int(os.environ["N"]), int(os.environ["M"])
KEY = os.environ["STELLA_SECRET_BENCH_KEY"]
GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"]


def keep(pid):
    with open(os.path.join(WORK, "pids"), "a") as f:
        f.write(f"{pid}\n")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def repo(name, steps, port, script):
    d = os.path.join(WORK, name)
    os.makedirs(os.path.join(d, "packs", "p"))
    subprocess.run(GIT + ["init", "-q", "-b", "main"], cwd=d, check=True)
    subprocess.run([STELLA, "init", "."], cwd=d, check=True, capture_output=True)
    with open(os.path.join(d, ".stella", "config.yaml"), "w") as f:
        f.write("branch: main\ncommit: { batchMs: 2000 }\nnotify:\n"
                f"  - {{ id: bench, url: 'http://127.0.0.1:{port}/', events: ['step.*'], secret: BENCH_KEY }}\n")
    with open(os.path.join(d, "packs", "p", "pack.yaml"), "w") as f:
        f.write("apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: p, version: 1.0.0 }\nspec:\n  steps:\n")
        for i in range(steps):
            f.write(f"    - {{ id: s{i}, run: {{ uses: builtin:shell, with: {{ script: '{script}' }} }} }}\n")
    subprocess.run(GIT + ["add", "-A"], cwd=d, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", "init"], cwd=d, check=True)
    with open(os.path.join(WORK, "in.yaml"), "w") as f:
        f.write("{}\n")
    subprocess.run([STELLA, "run", "request", "packs/p", "--inputs", os.path.join(WORK, "in.yaml"), "--id", "r1"],
                   cwd=d, check=True, capture_output=True)
    subprocess.run(GIT + ["add", "-A"], cwd=d, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", "request"], cwd=d, check=True)
    return d


def receiver(port, log):
    p = subprocess.Popen([PY, RECEIVER, str(port), KEY, log], stdout=subprocess.PIPE)
    keep(p.pid)
    assert p.stdout.readline().strip() == b"listening"
    return p


def got(log):
    try:
        with open(log) as f:
            return [json.loads(l) for l in f]
    except FileNotFoundError:
        return []


def daemon(d):
    p = subprocess.Popen([STELLA, "daemon", "--repo", ".", "--poll", "1s"], cwd=d,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keep(p.pid)
    return p


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


def wait(what, within, cond):
    end = time.time() + within
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: waited {within}s for {what}")


def pending(d):
    p = os.path.join(d, ".git", "stella", "outbox", "pending", "bench")
    return len([x for x in os.listdir(p) if x.endswith(".json")]) if os.path.isdir(p) else 0


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


# 1. latency
port = free_port()
d = repo("latency", N, port, "sleep 0.2")
log = os.path.join(WORK, "latency.ndjson")
rx = receiver(port, log)
dm = daemon(d)
wait("every notification", 300, lambda: len(got(log)) >= 2 * N)
lat = []
for g in got(log):
    ce = json.loads(g["body"])
    t = datetime.datetime.fromisoformat(ce["time"].replace("Z", "+00:00")).timestamp()
    lat.append((g["at"] - t) * 1000)
assert all(g["verified"] is True for g in got(log))
lat.sort()
base = mem(dm.pid)
dm.kill(); rx.kill()
print(f"latency, event to receiver ({len(lat)} notifications): median {statistics.median(lat):.1f} ms, "
      f"p90 {lat[int(len(lat) * 0.9)]:.1f} ms, max {lat[-1]:.1f} ms   target: median < 50 ms")
print(f"  baseline daemon after it: VmRSS {base['VmRSS']:.1f} MB, VmHWM {base['VmHWM']:.1f} MB")

# 2. backlog
port = free_port()
d = repo("backlog", M, port, "true")
log = os.path.join(WORK, "backlog.ndjson")
dm = daemon(d)
wait("every notification queued", 600, lambda: pending(d) >= 2 * M)
time.sleep(1)
m = mem(dm.pid)
disk = du(os.path.join(d, ".git", "stella", "outbox"))
print(f"backlog of {pending(d)} undeliverable notifications: daemon VmRSS {m['VmRSS']:.1f} MB, VmHWM {m['VmHWM']:.1f} MB, "
      f"outbox {disk / 1e6:.2f} MB on disk   target: < 10 MB")
t0 = time.time()
rx = receiver(port, log)
wait("the backlog delivered", 300, lambda: len({g["id"] for g in got(log)}) >= 2 * M)
took = time.time() - t0
print(f"  receiver back: all {2 * M} delivered in {took:.1f} s ({2 * M / took:.0f}/s, one target)   target: < 60 s")
dm.kill(); rx.kill()
PY
