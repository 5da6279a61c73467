#!/usr/bin/env bash
# The ledger at scale (issue 13): builds a ledger of N trivial runs with the runner itself and
# measures, at N/10 and again at N on the same growing ledger, what a user pays for the
# history; each figure is printed with its ratio to the N/10 figure of the same run.
#   build    requests (runs/_<xx>/<id>/request.yaml, or runs/<id>/ with --flat, of a one-step
#            pack, builtin:exec /bin/true)
#            written and committed in batches (one `git add` + `git commit` per batch), each
#            batch carried out by `stella daemon --once`: runs/s over each stretch (0 -> N/10,
#            N/10 -> N), commits and daemon included; the peak RSS of the `--once` of the last
#            batch of each stretch (wait4's ru_maxrss)
#   commit -> first step   a daemon watching (`--poll 30s`, so file events trigger the work);
#            write one request, `git commit`; t0 when `git commit` returns; latency = `ts` of
#            the run's first `step.started` in .git/stella/journal/<id>.ndjson - t0 (journal
#            timestamps have millisecond resolution; the daemon may see the ref before
#            `git commit` exits, so a figure can be slightly negative). One warm-up request,
#            then 3 measured, each waited for until its final commit is on the branch; median.
#            Also the watching daemon's VmHWM.
#   `stella runs list`, `stella runs list --limit 50` (when the flag exists),
#   `stella runs show <the first run>`, an idle `stella daemon --once`: median of 3 each
#   `stella ledger verify`   median of 3 when one takes under 5 s, else one
#   .git     disk usage before gc (of it: .git/stella, the runner's journals), then after
#            `git gc --prune=now` of a copy (the ledger itself is never repacked), per run
# and at the end one run whose step prints 100 MB of random base64 lines (poorly compressible,
# as real logs can be): how much .git grows for that run (before gc), and the bytes of events
# the ledger holds for it (every blob of its run directory's events*), against the log the runner keeps
# (limits.logBytes, 8 MiB by default).
# Git runs with no user or system configuration and gc.auto=0 for the bench's own commits, so
# what is measured is Stella's storage, not a `git commit` that happened to auto-pack it.
# The work directory (repository, runner workspaces, daemon logs) is under target/, not /tmp
# (a sandboxed step has a /tmp of its own).
# Usage: bench/scale.sh [--runs N] [--quick] [--flat] [--git-defaults] [--ledger-branch] [--keep DIR]
#   --runs N    the ledger's size (default 1000; the issue's acceptance figure is 10000)
#   --flat      write every request in the flat layout, runs/<id>/ (the layout before shards)
#   --git-defaults  leave out `git config feature.manyFiles true` (docs/ledger.md recommends it
#               for a runner's clone of a large ledger)
#   --ledger-branch  the runner commits to a separate ledger branch, stella/ledger (`stella init
#               --ledger-branch`; docs/remote.md): the checkout stays on main, whose index
#               and working tree then hold the requests only, not the runner's files
#   --quick     N = 200 unless --runs says otherwise, a 20 MB step instead of 100 MB (for CI)
#   --keep DIR  build in DIR (created; must be empty) and keep it afterwards
# Needs bash, git, python3 (and cargo, unless STELLA_BIN names a built stella binary).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: bench/scale.sh [--runs N] [--quick] [--flat] [--git-defaults] [--ledger-branch] [--keep DIR]" >&2; exit 2; }
runs= quick=false keep= flat=false many_files=true ledger_branch=
while (($#)); do
  case $1 in
    --runs)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage
      runs=$2
      shift 2
      ;;
    --quick) quick=true; shift ;;
    --flat) flat=true; shift ;;
    --git-defaults) many_files=false; shift ;;
    --ledger-branch) ledger_branch=stella/ledger; shift ;;
    --keep)
      [[ -n ${2:-} ]] || usage
      keep=$2
      shift 2
      ;;
    *) usage ;;
  esac
done
loud_mb=100
if $quick; then
  runs=${runs:-200}
  loud_mb=20
fi
runs=${runs:-1000}
((runs >= 10)) || { echo "scale: --runs must be at least 10 (N/10 is measured too)" >&2; exit 2; }

source bench/lib.sh
bench_needs git python3 du cp

if [[ -n $keep ]]; then
  mkdir -p "$keep"
  work=$(cd "$keep" && pwd)
  [[ -z $(ls -A "$work") ]] || { echo "scale: $work is not empty" >&2; exit 2; }
else
  mkdir -p target
  work=$(mktemp -d "$PWD/target/scale.XXXXXX")
fi
pypid=
# Every daemon the bench starts is its own process group; its id goes to $work/pids.
cleanup() {
  local pid
  if [[ -n $pypid ]] && kill -0 "$pypid" 2> /dev/null; then
    kill -TERM "$pypid" 2> /dev/null || true # it stops its daemons on the way out
    wait "$pypid" 2> /dev/null || true
  fi
  if [[ -f $work/pids ]]; then
    while read -r pid; do
      [[ -n $pid ]] && kill -KILL -- "-$pid" 2> /dev/null || true
    done < "$work/pids"
  fi
  if [[ -n $keep ]]; then echo "scale: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export XDG_STATE_HOME=$work/state # the runner's workspaces
export STELLA=$stella WORK=$work RUNS=$runs LOUD_MB=$loud_mb QUICK=$quick FLAT=$flat MANY_FILES=$many_files LEDGER_BRANCH=$ledger_branch

cat > "$work/scale.py" << 'PY'
import datetime, hashlib, json, os, re, shutil, signal, statistics, subprocess, sys, time

STELLA, WORK = os.environ["STELLA"], os.environ["WORK"]
N, LOUD_MB, QUICK = int(os.environ["RUNS"]), int(os.environ["LOUD_MB"]), os.environ["QUICK"] == "true"
REPO = os.path.join(WORK, "repo")
PIDS = os.path.join(WORK, "pids")
GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com",
       "-c", "commit.gpgsign=false", "-c", "gc.auto=0"]
REQUEST = "apiVersion: stella/v1\nkind: RunRequest\npack: packs/true\n"
FLAT = os.environ["FLAT"] == "true"
# Where the runner commits: main, or with --ledger-branch a branch of its own.
LEDGER = os.environ["LEDGER_BRANCH"] or "main"
MANY_FILES = os.environ["MANY_FILES"] == "true"


def count_runs():
    """The run directories in the working tree, in both layouts."""
    n = 0
    for e in os.scandir(os.path.join(REPO, "runs")):
        if e.is_dir() and re.fullmatch(r"_[0-9a-f]{2}", e.name):
            n += sum(1 for r in os.scandir(e.path) if r.is_dir())
        elif e.is_dir():
            n += 1
    return n


def run_dir(rid):
    """Where run `rid` lives: its shard runs/_<xx>/<id> (docs/ledger.md), or runs/<id> with --flat."""
    if FLAT:
        return f"runs/{rid}"
    return f"runs/_{hashlib.sha256(rid.encode()).hexdigest()[:2]}/{rid}"


class Failed(Exception):
    pass


def say(msg):
    print(f"scale: {msg}", file=sys.stderr, flush=True)


def run(cmd, cwd=REPO, timeout=600):
    p = subprocess.run(cmd, cwd=cwd, timeout=timeout, capture_output=True, text=True)
    if p.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p.stdout


def timed(cmd, timeout=3600):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
    return dt


def med(cmd, n=3):
    return statistics.median(timed(cmd) for _ in range(n))


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def remember(pid):
    """The script's EXIT trap kills the process groups listed in $WORK/pids."""
    with open(PIDS, "a") as f:
        f.write(f"{pid}\n")


def forget(pid):
    pids = [p for p in read(PIDS).split() if p != str(pid)]
    with open(PIDS, "w") as f:
        f.write("".join(p + "\n" for p in pids))


def wait_for(pred, timeout, what, daemon=None, interval=0.001):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if daemon is not None and daemon.proc.poll() is not None:
            raise Failed(f"the daemon exited ({daemon.proc.returncode}) while waiting for {what}:\n{daemon.tail()}")
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout} s waiting for {what}\n{daemon.tail() if daemon else ''}")
        time.sleep(interval)


def once(log):
    """`stella daemon --once`: (seconds, peak RSS in KiB from wait4)."""
    with open(log, "w") as out:
        t = time.perf_counter()
        p = subprocess.Popen([STELLA, "daemon", "--once", "--repo", "."], cwd=REPO, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        remember(p.pid)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
    forget(p.pid)
    if p.returncode != 0:
        raise Failed(f"stella daemon --once exited {p.returncode}:\n{read(log)[-3000:]}")
    return secs, usage.ru_maxrss


class Daemon:
    """`stella daemon --repo . --poll 30s` in its own process group, output to a log file."""

    def __init__(self, log):
        self.log = log
        self.out = open(log, "w")
        self.proc = subprocess.Popen([STELLA, "daemon", "--repo", ".", "--poll", "30s"], cwd=REPO,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        remember(self.proc.pid)
        wait_for(lambda: "stella daemon: ready" in read(log), 600, "the ready line", self, 0.01)

    def tail(self):
        return "daemon log (last lines):\n" + "\n".join(read(self.log).splitlines()[-15:])

    def hwm_kib(self):
        for line in read(f"/proc/{self.proc.pid}/status").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
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


def finished(rid):
    """The run's final commit (with its evidence) is on the branch."""
    p = subprocess.run(["git", "cat-file", "-e", f"{LEDGER}:{run_dir(rid)}/evidence/manifest.json"], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p.returncode == 0


def request(ids, pack="packs/true", inputs=""):
    for rid in ids:
        os.makedirs(os.path.join(REPO, run_dir(rid)))
        with open(os.path.join(REPO, run_dir(rid), "request.yaml"), "w") as f:
            f.write(REQUEST.replace("packs/true", pack) + inputs)
    person(["add", "runs"])
    person(["commit", "-q", "-m", f"request {ids[0]}" + (f" .. {ids[-1]}" if len(ids) > 1 else "")])


LOCKED = [0]


def person(args):
    """A person's git command; retried (and counted) while the runner holds .git/index.lock."""
    for _ in range(1000):
        try:
            return run(GIT + args)
        except Failed as e:
            if "index.lock" not in str(e):
                raise
            LOCKED[0] += 1
            time.sleep(0.01)
    raise Failed(f"git {args[0]}: .git/index.lock held for 10 s")


def du(path):
    """Disk usage in bytes (blocks, as `du` counts them: a loose object costs at least 4 KiB)."""
    return int(subprocess.run(["du", "-s", "--block-size=1", path], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def load():
    return read("/proc/loadavg").split(" ")[0]


LOAD = [load()]


def setup():
    os.makedirs(os.path.join(REPO, "packs/true"))
    os.makedirs(os.path.join(REPO, "packs/loud"))
    run(GIT + ["init", "-q", "-b", "main"])
    # What docs/ledger.md recommends for a runner's clone of a large ledger (index.skipHash:
    # no checksum over the whole index at each runner commit); --git-defaults leaves it out.
    if MANY_FILES:
        run(GIT + ["config", "feature.manyFiles", "true"])
    run([STELLA, "init", "."] + (["--ledger-branch", LEDGER] if LEDGER != "main" else []))
    with open(os.path.join(REPO, "packs/true/pack.yaml"), "w") as f:
        f.write('apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: "true", version: "1.0.0" }\n'
                "spec:\n  steps:\n    - { id: t, run: { uses: builtin:exec, with: { argv: [/bin/true] } } }\n")
    with open(os.path.join(REPO, "packs/loud/pack.yaml"), "w") as f:
        f.write("apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: loud, version: 1.0.0 }\n"
                "spec:\n  inputs: [{ name: mb, type: string }]\n  steps:\n    - id: shout\n"
                "      run: { uses: builtin:shell, with: { script: \"head -c $((STELLA_INPUT_MB * 750000))"
                " /dev/urandom | base64 -w 98\" } }\n")
    run(GIT + ["add", "-A"])
    run(GIT + ["commit", "-q", "-m", "stella init, packs true and loud"])


def latency(size):
    d = Daemon(os.path.join(WORK, f"watch-{size}.log"))
    lat = []
    try:
        for i in range(4):  # 0 is the warm-up
            rid = f"lat-{size}-{i}"
            journal = os.path.join(REPO, ".git/stella/journal", rid + ".ndjson")
            request([rid])
            t0 = time.time()
            started = wait_for(lambda: event_ts(journal, "step.started"), 600, f"{rid} step.started", d)
            wait_for(lambda: finished(rid), 600, f"the final commit of {rid}", d, 0.005)
            if i > 0:
                lat.append(started - t0)
        hwm = d.hwm_kib()
    finally:
        d.stop()
    return statistics.median(lat), lat, hwm


def api_list():
    """`GET /api/v1/runs?limit=50` from `stella serve` on the ledger: median of 3 after one
    warm-up (the first scan brings the server's view of the index up to date)."""
    import urllib.request
    log = os.path.join(WORK, "serve.log")
    with open(log, "w") as out:
        proc = subprocess.Popen([STELLA, "serve", "--repo", ".", "--http", "127.0.0.1:0"], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    with open(PIDS, "a") as f:
        f.write(f"{proc.pid}\n")
    try:
        base = wait_for(lambda: (re.search(r"http on (http://[0-9.:]+)", read(log)) or [None, None])[1],
                        60, "stella serve's address", None, 0.01)
        url = base + "/api/v1/runs?limit=50"

        def get():
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=600) as r:
                body = json.loads(r.read())
            if not 0 < len(body.get("runs", [])) <= 50:
                raise Failed(f"GET {url}: {len(body.get('runs', []))} runs")
            return time.perf_counter() - t
        get()
        return statistics.median(get() for _ in range(3))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def git_size():
    """.git before gc; its journals; .git after `git gc --prune=now` of a copy."""
    git = os.path.join(REPO, ".git")
    before, stella = du(git), du(os.path.join(git, "stella"))
    copy = os.path.join(WORK, "gc-copy.git")
    shutil.rmtree(copy, ignore_errors=True)
    subprocess.run(["cp", "-a", git, copy], check=True)
    run(GIT + ["--git-dir", copy, "gc", "--quiet", "--prune=now"], cwd=WORK, timeout=3600)
    after, after_stella = du(copy), du(os.path.join(copy, "stella"))
    # What of it is the ledger (objects/, what a clone gets) and what the checkout's own
    # bookkeeping (git's index lists every file of the working tree; logs/ the reflogs).
    parts = {"objects_gc": du(os.path.join(copy, "objects")), "index": du(os.path.join(copy, "index")),
             "logs": du(os.path.join(copy, "logs"))}
    # The ledger itself: its objects in one pack whose deltas are found afresh (gc reuses the
    # deltas of the runner's incremental packs), the pack's index included.
    run(GIT + ["--git-dir", copy, "repack", "-q", "-a", "-d", "-f"], cwd=WORK, timeout=3600)
    objects = du(os.path.join(copy, "objects"))
    shutil.rmtree(copy)
    return before, stella, after, after_stella, objects, parts


def verify():
    """`stella ledger verify`: (seconds, its first line); a failure stops the bench."""
    t = time.perf_counter()
    v = subprocess.run([STELLA, "ledger", "verify"], cwd=REPO, capture_output=True, text=True, timeout=7200)
    secs = time.perf_counter() - t
    out = (v.stdout + v.stderr).strip()
    if v.returncode != 0:
        raise Failed(f"stella ledger verify failed:\n{out[-3000:]}")
    return secs, out.splitlines()[0] if out else ""


def measure(size, stretch):
    say(f"measuring at {size} runs")
    m = {"size": size, "load": load(), **stretch}
    m["latency"], m["latencies"], m["watch_hwm"] = latency(size)
    m["list"] = med([STELLA, "runs", "list"])
    m["list_limit"] = med([STELLA, "runs", "list", "--limit", "50"]) if HAS_LIMIT else None
    m["show"] = med([STELLA, "runs", "show", "run-000000"])
    m["api_list"] = api_list()
    m["idle"] = med([STELLA, "daemon", "--once", "--repo", "."])
    v = [verify()]
    if v[0][0] < 5:
        v += [verify() for _ in range(2)]
    m["verify"], m["verify_n"], m["verify_out"] = statistics.median(t for t, _ in v), len(v), v[-1][1]
    m["git_before"], m["git_stella"], m["git_after"], m["git_after_stella"], m["objects"], parts = git_size()
    m.update(parts)
    m["runs"] = count_runs()
    m["commits"] = int(run(["git", "rev-list", "--count", LEDGER]).strip())
    say(f"at {size}: build {m['build_rate']:.1f} runs/s, commit -> step {m['latency'] * 1000:.0f} ms,"
        f" runs list {m['list'] * 1000:.0f} ms, runs show {m['show'] * 1000:.0f} ms,"
        f" idle --once {m['idle'] * 1000:.0f} ms, verify {m['verify'] * 1000:.0f} ms,"
        f" peak RSS {m['peak'] / 1024:.1f} MiB, .git {m['git_before'] / 1048576:.1f} MiB"
        f" ({m['git_after'] / 1048576:.1f} MiB after gc)")
    return m


def build(upto, start, batch):
    """Requests start..upto in batches, each run by `daemon --once`."""
    t = time.perf_counter()
    done, peak, last = start, 0, time.perf_counter()
    while done < upto:
        ids = [f"run-{i:06d}" for i in range(done, min(done + batch, upto))]
        request(ids)
        _, peak = once(os.path.join(WORK, "once.log"))
        done += len(ids)
        if time.perf_counter() - last > 15 or done == upto:
            last = time.perf_counter()
            say(f"built {done}/{N} runs ({(done - start) / (last - t):.1f} runs/s since {start})")
    secs = time.perf_counter() - t
    return {"build_rate": (upto - start) / secs, "build_s": secs, "build_runs": upto - start, "peak": peak}


def loud():
    """One run whose step prints LOUD_MB MB: .git growth, events stored, the bound."""
    rid = "loud"
    before = du(os.path.join(REPO, ".git/objects"))
    request([rid], "packs/loud", f'inputs: {{ mb: "{LOUD_MB}" }}\n')
    secs, peak = once(os.path.join(WORK, "loud.log"))
    after = du(os.path.join(REPO, ".git/objects"))
    objs = run(["git", "rev-list", "--objects", "--all"])
    ids = "".join(l.split(" ", 1)[0] + "\n" for l in objs.splitlines()
                  if f" {run_dir(rid)}/events" in l and l.endswith(".ndjson"))
    sizes = subprocess.run(["git", "cat-file", "--batch-check=%(objectsize)"], cwd=REPO, input=ids,
                           check=True, capture_output=True, text=True).stdout.split()
    config = run(["git", "show", "main:.stella/config.yaml"])
    found = re.search(r"(?<![A-Za-z])logBytes:\s*(\d+)", config)
    log_bytes = int(found.group(1)) if found else 8388608  # the default (docs/daemon.md)
    state = json.loads(run([STELLA, "runs", "show", rid, "--json"])).get("state")
    journal = os.path.getsize(os.path.join(REPO, ".git/stella/journal", rid + ".ndjson"))
    return {"journal": journal, "grew": after - before, "stored": sum(int(s) for s in sizes), "segments": len(sizes),
            "bound": log_bytes, "secs": secs, "peak": peak, "state": state}


def check(m):
    rows = json.loads(run([STELLA, "runs", "list", "--json"], timeout=3600))
    bad = [r["id"] for r in rows if r["state"] != "succeeded"]
    if len(rows) != m["runs"] or bad:
        raise Failed(f"expected {m['runs']} succeeded runs, runs list has {len(rows)}; not succeeded: {bad[:10]}")


def report(small, big, lo, batch):
    ok = lambda c: "PASS" if c else "MISS"
    ms = lambda s: f"{s * 1000:.0f} ms" if s >= 0.1 else f"{s * 1000:.1f} ms"
    mib = lambda b: f"{b / 1048576:.1f} MiB"
    w = 44
    print()
    print(f"stella bench: scale, {N} runs ({os.cpu_count()} cpus, release build{', --quick' if QUICK else ''};"
          f" requests in batches of {batch}; {'flat' if FLAT else 'sharded'} layout;"
          f"{' runner commits on ' + LEDGER + ';' if LEDGER != 'main' else ''}"
          f" {'feature.manyFiles' if MANY_FILES else 'git defaults'})")
    print()
    print(f"{'figure':<{w}} {'N/10=' + str(small['size']):>12} {'N=' + str(big['size']):>12} {'ratio':>7}  target (issue 13, at 10,000 runs)")

    def row(name, a, b, fmt, target="", verdict=None):
        r = f"{b / a:6.2f}x" if a else ""
        t = f"{target}  {verdict}" if verdict else target
        print(f"{name:<{w}} {fmt(a):>12} {fmt(b):>12} {r:>7}  {t}")

    rate = lambda x: f"{x:.1f}/s"
    r_ok = lambda k, lim: big[k] / small[k] <= lim if small[k] else False
    row(f"build rate, runs/s (0-{small['size']}, -{big['size']})", small["build_rate"], big["build_rate"], rate,
        "(each stretch)")
    # The target is the whole build: N runs, every batch's commit and `daemon --once` included.
    whole = (small["build_runs"] + big["build_runs"]) / (small["build_s"] + big["build_s"])
    print(f"{'  the whole build, runs/s (0-' + str(big['size']) + ')':<{w}} {'':>12} {rate(whole):>12} {'':>7}  "
          f">= 50 runs/s  {ok(whole >= 50)}")
    row("commit -> step.started, median of 3", small["latency"], big["latency"], ms,
        "< 50 ms, <= 1.5x", ok(big["latency"] < 0.05 and r_ok("latency", 1.5)))
    row("stella runs list, median of 3", small["list"], big["list"], ms,
        "(the target is for --limit 50)")
    if HAS_LIMIT:
        row("stella runs list --limit 50, median of 3", small["list_limit"], big["list_limit"], ms,
            "< 100 ms, <= 1.5x", ok(big["list_limit"] < 0.1 and r_ok("list_limit", 1.5)))
    else:
        print(f"{'stella runs list --limit 50':<{w}} {'-':>12} {'-':>12} {'':>7}  < 100 ms, <= 1.5x  (no --limit flag yet)")
    row("stella runs show run-000000, median of 3", small["show"], big["show"], ms,
        "<= 1.5x (walks no other run)", ok(r_ok("show", 1.5)))
    row("GET /api/v1/runs?limit=50 (stella serve), median", small["api_list"], big["api_list"], ms,
        "< 50 ms (issue 14)", ok(big["api_list"] < 0.05))
    row("daemon --once, nothing to do, median of 3", small["idle"], big["idle"], ms,
        "< 100 ms, <= 1.5x", ok(big["idle"] < 0.1 and r_ok("idle", 1.5)))
    row(f"stella ledger verify, median of {small['verify_n']}/{big['verify_n']}", small["verify"], big["verify"],
        ms, "<= 12x (linear in commits)", ok(r_ok("verify", 12)))
    row("peak RSS, daemon --once of the last batch", small["peak"] * 1024, big["peak"] * 1024, mib,
        "<= 1.5x", ok(r_ok("peak", 1.5)))
    row("peak RSS (VmHWM), the watching daemon", small["watch_hwm"] * 1024, big["watch_hwm"] * 1024, mib,
        "<= 1.5x", ok(r_ok("watch_hwm", 1.5)))
    row(".git before gc (disk usage)", small["git_before"], big["git_before"], mib)
    row("  of it .git/stella (journals, index)", small["git_stella"], big["git_stella"], mib)
    row(".git after gc --prune=now (a copy)", small["git_after"], big["git_after"], mib)
    per = lambda m: m["git_after"] / m["runs"]
    row("  per run (the whole .git / runs)", per(small), per(big), lambda b: f"{b / 1024:.2f} KiB")
    runs_added = big["runs"] - small["runs"]
    marginal = lambda k: (big[k] - small[k]) / runs_added
    margin_after = marginal("git_after") - marginal("git_after_stella")
    print(f"{'  per run added from N/10 to N, before gc':<{w}} {'':>12} {marginal('git_before') / 1024:>8.2f} KiB"
          f" {'':>7}  (of it .git/stella {marginal('git_stella') / 1024:.2f} KiB)")
    print(f"{'  per run added from N/10 to N, after gc':<{w}} {'':>12} {margin_after / 1024:>8.2f} KiB"
          f" {'':>7}  < 2 KB per run (without .git/stella)  {ok(margin_after < 2000)}")
    print(f"{'  of it objects/ (the ledger a clone gets)':<{w}} {'':>12} {marginal('objects_gc') / 1024:>8.2f} KiB"
          f" {'':>7}  < 2 KB per run (the ledger's objects)  {ok(marginal('objects_gc') < 2000)}")
    print(f"{'  of it git index / reflogs (the checkout)':<{w}} {'':>12} {marginal('index') / 1024:>8.2f} KiB"
          f" {'':>7}  and {marginal('logs') / 1024:.2f} KiB of reflogs")
    print(f"{'  the objects repacked with -adf':<{w}} {'':>12} {marginal('objects') / 1024:>8.2f} KiB"
          f" {'':>7}  (deltas found afresh: what maintenance's full repack keeps near)")
    print()
    grew_ok = lo["grew"] <= 1.25 * lo["bound"] and lo["stored"] <= 1.25 * lo["bound"]
    print(f"a step printing {LOUD_MB} MB (random base64 lines), on the {big['size']}-run ledger: run {lo['state']} in {lo['secs']:.1f} s, "
          f"daemon peak RSS {mib(lo['peak'] * 1024)}")
    print(f"  .git/objects grew {mib(lo['grew'])} before gc; the ledger holds {mib(lo['stored'])} of its events in "
          f"{lo['segments']} blob(s); the log kept is bounded by limits.logBytes {mib(lo['bound'])};"
          f" its journal in .git/stella: {mib(lo['journal'])}")
    print(f"  target: the ledger grows by at most the bounded log it keeps  {ok(grew_ok)}")
    print()
    for m in (small, big):
        print(f"at {m['size']}: {m['runs']} runs, {m['commits']} commits; build {m['build_runs']} runs in "
              f"{m['build_s']:.1f} s; latencies {', '.join(ms(x) for x in m['latencies'])}")
    print(f"ledger verify at N: {big['verify_out']}")
    print(f"the bench's git add/commit found .git/index.lock held by the runner {LOCKED[0]} times (retried after 10 ms)")
    print(f"load average (1 min) at the start / at N/10 / at N: {LOAD[0]} / {small['load']} / {big['load']}"
          " (other work on the machine inflates the times)")


def main():
    global HAS_LIMIT
    HAS_LIMIT = "--limit" in run([STELLA, "runs", "list", "--help"], cwd=WORK)
    if not HAS_LIMIT:
        say("`stella runs list` has no --limit: measuring plain `runs list` only")
    setup()
    batch = max(10, min(500, N // 20))
    small_n = N // 10
    say(f"building {small_n} runs in batches of {batch}")
    small = measure(small_n, build(small_n, 0, batch))
    say(f"building {N} runs")
    big = measure(N, build(N, small_n, batch))
    check(big)
    say(f"a step printing {LOUD_MB} MB")
    lo = loud()
    report(small, big, lo, batch)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    try:
        main()
    except (Failed, subprocess.TimeoutExpired) as e:
        say(str(e))
        sys.exit(1)
PY

# In the background and waited for, so that a signal to this script is handled at once.
python3 "$work/scale.py" &
pypid=$!
wait "$pypid"
