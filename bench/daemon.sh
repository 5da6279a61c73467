#!/usr/bin/env bash
# Daemon benchmarks on a scratch repository, each figure next to a baseline or a target
# measured in the same run:
#   1. commit -> first step: with `stella daemon --repo . --poll 30s` watching (so only file
#      events trigger work), N one-step requests (builtin:exec /bin/true), one after another:
#      write the request, `git commit`, t0 when `git commit` returns, latency = ts of the run's
#      `step.started` in .git/stella/journal/<run>.ndjson - t0; then wait for the runner's
#      ledger commit before the next request. One warm-up request is not counted. The daemon
#      sees the new ref before `git commit` has exited, so a latency can be slightly negative;
#      journal timestamps have millisecond resolution.
#                                        target: median <= 50 ms, p99 <= 250 ms
#      baseline: the bare `git commit` of the same requests.
#   2. a ledger of 1,000 runs, all requests in one commit, built by `stella daemon --once`
#      (limits.maxRuns 4, commit.batchMs large): runs/s; on it
#        `stella runs list`, median of 5        target <= 200 ms  (baseline: git log --oneline | wc -l)
#        daemon start -> ready line, median of 3 target <= 1 s    (baseline: stella --version)
#        `stella ledger verify`                  must pass, time reported
#   3. the idle daemon (watch mode, default --poll 5s) on that ledger: CPU (utime+stime, and
#      that of reaped children, from /proc/<pid>/stat) over 60 s    target < 0.05 s per minute
#      and resident memory (VmRSS, VmHWM). With nothing committed, what it costs is the safety
#      poll's rescans; the table also shows the CPU per poll.
# Usage: bench/daemon.sh [--quick]   (--quick: 10 requests, 100 runs, 10 s idle; for CI)
# Needs bash, git and python3 (and cargo, unless STELLA_BIN names a built stella binary).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
case "${1:-}" in
  --quick) quick=true ;;
  "") ;;
  *) echo "usage: bench/daemon.sh [--quick]" >&2; exit 2 ;;
esac
lat_n=50; ledger_n=1000; idle_s=60; idle_poll=5s
if $quick; then lat_n=10; ledger_n=100; idle_s=10; fi

source bench/lib.sh
bench_needs git python3

work=$(mktemp -d)
pypid=
# Every daemon the bench starts is its own process group; its id goes to $work/pids.
cleanup() {
  local pid
  if [[ -n "$pypid" ]] && kill -0 "$pypid" 2> /dev/null; then
    kill -TERM "$pypid" 2> /dev/null || true   # it stops its daemons on the way out
    wait "$pypid" 2> /dev/null || true
  fi
  if [[ -f "$work/pids" ]]; then
    while read -r pid; do
      [[ -n "$pid" ]] && kill -KILL -- "-$pid" 2> /dev/null || true
    done < "$work/pids"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Reproducible git: no user or system configuration (hooks, signing, auto gc) in the way; the
# scratch repositories get an identity of their own (the runner's ref update writes a reflog
# entry, which needs one).
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
g() { git -c user.name=Bench -c user.email=bench@example.com -c commit.gpgsign=false -c gc.auto=0 "$@"; }

# A repository with `stella init` and a one-step pack packs/true, committed.
new_repo() {
  local dir=$1 batch_ms=$2
  mkdir -p "$dir/packs/true"
  g -C "$dir" init -q -b main
  git -C "$dir" config user.name Bench
  git -C "$dir" config user.email bench@example.com
  (cd "$dir" && "$stella" init . > /dev/null)
  printf 'branch: main\nlimits: { maxRuns: 4 }\ncommit: { batchMs: %s }\n' "$batch_ms" > "$dir/.stella/config.yaml"
  cat > "$dir/packs/true/pack.yaml" <<'EOF'
apiVersion: stella/v1
kind: TaskPack
metadata: { name: "true", version: "1.0.0" }
spec:
  steps:
    - { id: t, run: { uses: builtin:exec, with: { argv: [/bin/true] } } }
EOF
  g -C "$dir" add -A
  g -C "$dir" commit -q -m "stella init"
}

echo '{}' > "$work/inputs.yaml"
new_repo "$work/latency" 2000
new_repo "$work/ledger" 600000

cat > "$work/bench.py" <<'PY'
import datetime, json, os, signal, statistics, subprocess, sys, time

STELLA, WORK = os.environ["STELLA"], os.environ["WORK"]
PIDS = os.path.join(WORK, "pids")
INPUTS = os.path.join(WORK, "inputs.yaml")
GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com",
       "-c", "commit.gpgsign=false", "-c", "gc.auto=0"]


class Failed(Exception):
    pass


def run(cmd, cwd, timeout=60, quiet=True):
    p = subprocess.run(cmd, cwd=cwd, timeout=timeout, capture_output=True, text=True)
    if p.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p.stdout


def timed(cmd, cwd, timeout=120):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise Failed(f"{cmd} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return dt


def med(cmd, cwd, n):
    return statistics.median(timed(cmd, cwd) for _ in range(n))


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for(pred, timeout, what, daemon=None, interval=0.001):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if daemon is not None and daemon.proc.poll() is not None:
            raise Failed(f"the daemon exited ({daemon.proc.returncode}) while waiting for {what}:\n{daemon.tail()}")
        if time.monotonic() > deadline:
            tail = daemon.tail() if daemon else ""
            raise Failed(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(interval)


def remember(pid):
    """The bench's EXIT trap kills the process groups listed in $WORK/pids."""
    with open(PIDS, "a") as f:
        f.write(f"{pid}\n")


def forget(pid):
    pids = [p for p in read(PIDS).split() if p != str(pid)]
    with open(PIDS, "w") as f:
        f.write("".join(p + "\n" for p in pids))


class Daemon:
    """`stella daemon --repo .` in its own process group, output to a log file."""

    def __init__(self, repo, args, log):
        self.log = log
        self.out = open(log, "w")
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen([STELLA, "daemon", "--repo", ".", *args], cwd=repo,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        remember(self.proc.pid)

    def tail(self):
        return "daemon log (last lines):\n" + "\n".join(read(self.log).splitlines()[-15:])

    def wait_ready(self, timeout=60):
        wait_for(lambda: "stella daemon: ready" in read(self.log), timeout, "the ready line", self)
        return time.perf_counter() - self.t_spawn

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.out.close()
        forget(self.proc.pid)


def event_ts(journal, kind):
    """The ts (epoch seconds) of the first event of this type in a journal, or None."""
    needle = f'"type":"{kind}"'
    for line in read(journal).splitlines():
        if needle in line:
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line being written
            if e.get("type") == kind:
                return datetime.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
    return None


def head(repo):
    ref = read(os.path.join(repo, ".git/refs/heads/main")).strip()
    return ref or run(["git", "rev-parse", "HEAD"], repo).strip()


def save(name, data):
    with open(os.path.join(WORK, name + ".json"), "w") as f:
        json.dump(data, f)


# ---- 1. commit -> first step -------------------------------------------------------------
def latency(repo, n):
    d = Daemon(repo, ["--poll", "30s"], os.path.join(WORK, "latency-daemon.log"))
    try:
        d.wait_ready()
        lat, commit, ledger = [], [], []
        for i in range(n + 1):  # 0 is the warm-up
            rid = f"lat-{i:03d}"
            journal = os.path.join(repo, ".git/stella/journal", rid + ".ndjson")
            run([STELLA, "run", "request", "packs/true", "--inputs", INPUTS, "--id", rid], repo)
            run(GIT + ["add", "runs/" + rid], repo)
            tc = time.time()
            run(GIT + ["commit", "-q", "-m", "request " + rid], repo)
            t0 = time.time()
            started = wait_for(lambda: event_ts(journal, "step.started"), 30, f"{rid} step.started", d)
            wait_for(lambda: event_ts(journal, "run.succeeded") or event_ts(journal, "run.failed"),
                     30, f"{rid} to finish", d)
            if event_ts(journal, "run.failed"):
                raise Failed(f"run {rid} failed:\n{read(journal)}")
            # The run is done when its ledger commit is on the branch (so our next commit
            # does not race it). It may already be there.
            seen = [None]
            def ledger_committed():
                h = head(repo)
                if h == seen[0]:
                    return False
                seen[0] = h
                return run(["git", "log", "-1", "--format=%s", h], repo).startswith(f"stella: run {rid} ")
            wait_for(ledger_committed, 30, f"the ledger commit of {rid}", d, interval=0.002)
            t_ledger = time.time()
            if i > 0:
                lat.append(started - t0)
                commit.append(t0 - tc)
                ledger.append(t_ledger - t0)
        save("latency", {"lat": lat, "commit": commit, "ledger": ledger})
    finally:
        d.stop()


# ---- 2. a ledger of N runs ---------------------------------------------------------------
def ledger(repo, n):
    t = time.perf_counter()
    for i in range(n):
        run([STELLA, "run", "request", "packs/true", "--inputs", INPUTS, "--id", f"run-{i:04d}"], repo)
    requests_s = time.perf_counter() - t
    run(GIT + ["add", "-A"], repo)
    commit_s = timed(GIT + ["commit", "-q", "-m", f"{n} requests"], repo)

    t_wall = time.time()
    t = time.perf_counter()
    once_log = os.path.join(WORK, "once.log")
    limit = 120 + 5 * n  # generous: the build rate falls as the ledger grows
    with open(once_log, "w") as log:
        p = subprocess.Popen([STELLA, "daemon", "--once", "--repo", "."], cwd=repo, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        remember(p.pid)
        while True:
            try:
                p.wait(30)
                break
            except subprocess.TimeoutExpired:
                if time.perf_counter() - t > limit:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    raise Failed(f"stella daemon --once did not finish {n} runs in {limit} s:\n{read(once_log)[-2000:]}")
                done = read(once_log).count(" succeeded\n")
                print(f"bench:   {done}/{n} runs after {time.perf_counter() - t:.0f} s", file=sys.stderr)
    build_s = time.perf_counter() - t
    forget(p.pid)
    if p.returncode != 0:
        raise Failed(f"stella daemon --once exited {p.returncode}:\n{read(once_log)[-3000:]}")
    rows = json.loads(run([STELLA, "runs", "list", "--json"], repo))
    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    if len(rows) != n or states.get("succeeded") != n:
        raise Failed(f"expected {n} succeeded runs, runs list has {len(rows)}: {states}")
    # Completion rate over the first and the last tenth of the runs, from the journals.
    done = sorted(event_ts(os.path.join(repo, ".git/stella/journal", f"run-{i:04d}.ndjson"), "run.succeeded")
                  for i in range(n))
    k = max(n // 10, 1)
    first_rate = k / max(done[k - 1] - t_wall, 1e-3)
    last_rate = k / max(done[-1] - done[-k - 1], 1e-3)

    list_s = med([STELLA, "runs", "list"], repo, 5)
    log_s = med(["bash", "-c", "git log --oneline | wc -l"], repo, 5)
    commits = int(run(["git", "rev-list", "--count", "HEAD"], repo))
    version_s = med([STELLA, "--version"], repo, 3)
    ready = []
    for i in range(3):
        d = Daemon(repo, ["--poll", "30s"], os.path.join(WORK, f"ready-{i}.log"))
        try:
            ready.append(d.wait_ready())
        finally:
            d.stop()
    t = time.perf_counter()
    v = subprocess.run([STELLA, "ledger", "verify"], cwd=repo, capture_output=True, text=True, timeout=600)
    verify_s = time.perf_counter() - t
    save("ledger", {"n": n, "requests_s": requests_s, "commit_s": commit_s, "build_s": build_s,
                    "first_rate": first_rate, "last_rate": last_rate, "list_s": list_s,
                    "log_s": log_s, "commits": commits, "version_s": version_s,
                    "ready": ready, "ready_line": read(os.path.join(WORK, "ready-0.log")).strip().splitlines()[-1],
                    "verify_s": verify_s, "verify_ok": v.returncode == 0,
                    "verify_out": (v.stdout + v.stderr).strip()})


# ---- 3. idle ---------------------------------------------------------------------------
def sample(pid):
    stat = read(f"/proc/{pid}/stat")
    f = stat[stat.rindex(")") + 2:].split()
    own, children = int(f[11]) + int(f[12]), int(f[13]) + int(f[14])
    status = dict(l.split(":", 1) for l in read(f"/proc/{pid}/status").splitlines() if ":" in l)
    kib = lambda k: int(status[k].split()[0]) if k in status else 0
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        for l in read(f"/proc/{pid}/task/{task}/status").splitlines():
            if l.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(l.split()[1])
    return {"ticks": own, "child_ticks": children, "rss": kib("VmRSS"), "hwm": kib("VmHWM"),
            "threads": kib("Threads"), "switches": switches}


def idle(repo, seconds, poll, settle):
    d = Daemon(repo, ["--poll", poll], os.path.join(WORK, "idle-daemon.log"))
    try:
        d.wait_ready()
        time.sleep(settle)
        a = sample(d.proc.pid)
        time.sleep(seconds)
        if d.proc.poll() is not None:
            raise Failed(f"the idle daemon exited ({d.proc.returncode}):\n{d.tail()}")
        b = sample(d.proc.pid)
        save("idle", {"a": a, "b": b, "seconds": seconds, "poll": poll,
                      "hz": os.sysconf("SC_CLK_TCK")})
    finally:
        d.stop()


# ---- report ------------------------------------------------------------------------------
def report(quick):
    L, B, I = (json.load(open(os.path.join(WORK, n + ".json"))) for n in ("latency", "ledger", "idle"))
    ms = lambda s: f"{s * 1000:.1f}ms"
    ok = lambda c: "PASS" if c else "MISS"
    def p99(v):  # nearest rank
        v = sorted(v)
        return v[max(0, -(-len(v) * 99 // 100) - 1)]
    lat, com = L["lat"], L["commit"]
    lat_med, lat_p99, com_med, com_p99 = statistics.median(lat), p99(lat), statistics.median(com), p99(com)
    ready = statistics.median(B["ready"])
    hz = I["hz"]
    ticks = (I["b"]["ticks"] - I["a"]["ticks"]) + (I["b"]["child_ticks"] - I["a"]["child_ticks"])
    cpu = ticks / hz
    per_min = cpu * 60 / I["seconds"]
    # Below one clock tick the figure is only an upper bound: say "< 1 tick" rather than MISS
    # a 10 s quick run on a single tick.
    idle_ok = per_min < 0.05 or ticks == 0
    wake_min = (I["b"]["switches"] - I["a"]["switches"]) * 60 / I["seconds"]

    cpus = os.cpu_count()
    print()
    print(f"stella bench: daemon ({cpus} cpus, release build{', --quick' if quick else ''})")
    print()
    w = 50
    print(f"{'benchmark':<{w}} {'baseline':>10} {'stella':>10} {'ratio':>7}  target")
    def row(name, base, val, target="", verdict=None):
        r = f"{val / base:6.2f}x" if base else ""
        t = f"{target} {verdict}" if verdict else target
        print(f"{name:<{w}} {ms(base) if base else '':>10} {val if isinstance(val, str) else ms(val):>10} {r:>7}  {t}")
    n = len(lat)
    print(f"1. commit -> step.started, watch mode, {n} runs (baseline: the git commit)")
    row("   median", com_med, lat_med, "<= 50 ms", ok(lat_med <= 0.050))
    row("   p99", com_p99, lat_p99, "<= 250 ms", ok(lat_p99 <= 0.250))
    row("   min / max", None, f"{min(lat) * 1000:.1f}/{max(lat) * 1000:.0f}ms")
    row("   commit -> ledger commit on the branch, median", com_med, statistics.median(L["ledger"]))
    print(f"2. a ledger of {B['n']} runs ({B['commits']} commits)")
    row(f"   build: daemon --once, {B['n']} requests", None, f"{B['build_s']:.1f}s", f"{B['n'] / B['build_s']:.1f} runs/s")
    row(f"   rate over the first / last {max(B['n'] // 10, 1)} runs", None,
        f"{B['first_rate']:.1f}/{B['last_rate']:.1f}", "runs/s")
    row("   stella runs list, median of 5 (git log|wc -l)", B["log_s"], B["list_s"], "<= 200 ms", ok(B["list_s"] <= 0.200))
    row("   daemon start -> ready, median of 3 (--version)", B["version_s"], ready, "<= 1 s", ok(ready <= 1.0))
    row("   stella ledger verify (git log|wc -l)", B["log_s"], B["verify_s"], "passes", "PASS" if B["verify_ok"] else "FAIL")
    print(f"3. idle daemon on that ledger, watch mode, --poll {I['poll']}, {I['seconds']} s")
    row("   CPU while idle, per minute (incl. children)", None, f"{per_min:.3f}s",
        f"< 0.05 s  ({ticks} ticks of 1/{hz} s)", ok(idle_ok))
    polls = I["seconds"] / float(I["poll"].rstrip("s"))
    row(f"   CPU per safety poll (idle CPU / {polls:.0f} polls)", None, cpu / polls)
    row("   resident memory: VmRSS / VmHWM", None, f"{I['b']['rss'] / 1024:.1f}/{I['b']['hwm'] / 1024:.1f}", f"MiB, {I['b']['threads']} threads")
    row("   context switches while idle, per minute", None, f"{wake_min:.0f}")
    print()
    print(f"ledger verify: {B['verify_out'].splitlines()[0] if B['verify_out'] else '(no output)'}")
    print(f"ready line: {B['ready_line']}")
    print(f"context: git commit median {ms(com_med)}; {B['n']} requests written in {B['requests_s']:.1f}s, "
          f"committed in {ms(B['commit_s'])}; daemon ready times {', '.join(f'{r * 1000:.0f}ms' for r in B['ready'])}")
    if not B["verify_ok"]:
        print(B["verify_out"])
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    try:
        cmd, args = sys.argv[1], sys.argv[2:]
        if cmd == "latency":
            latency(args[0], int(args[1]))
        elif cmd == "ledger":
            ledger(args[0], int(args[1]))
        elif cmd == "idle":
            idle(args[0], int(args[1]), args[2], float(args[3]))
        elif cmd == "report":
            report(args[0] == "true")
    except (Failed, subprocess.TimeoutExpired) as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
PY

export STELLA=$stella WORK=$work
# In the background and waited for, so that a signal to this script is handled at once.
py() { python3 "$work/bench.py" "$@" & pypid=$!; wait "$pypid"; pypid=; }
settle=3; $quick && settle=2
echo "bench: 1/3 commit -> first step, $lat_n runs" >&2
py latency "$work/latency" "$lat_n"
echo "bench: 2/3 building a ledger of $ledger_n runs" >&2
py ledger "$work/ledger" "$ledger_n"
echo "bench: 3/3 idle daemon, ${idle_s}s" >&2
py idle "$work/ledger" "$idle_s" "$idle_poll" "$settle"
py report "$quick"
