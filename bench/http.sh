#!/usr/bin/env bash
# HTTP edge benchmarks on a scratch repository, each figure next to a baseline measured in
# the same run:
#   1. line printed by a step -> received by an SSE client: `stella daemon --http` runs a pack
#      whose step prints N lines (default 500), each carrying bash's $EPOCHREALTIME when it was
#      printed, 10 ms apart. A client of GET /api/v1/events, connected before the request is
#      committed, notes when each `step.log` arrives; latency = arrival - printed time.
#                                        target: median < 20 ms, p99 < 100 ms
#      baseline: the same lines read from the journal file (.git/stella/journal/<run>.ndjson)
#      directly, by a reader that looks for new bytes every 0.5 ms, in the same run; the ratio
#      is SSE / journal.
#   2. 200 SSE clients of the same kind on one run of N lines: each must receive every line;
#      the daemon's resident memory (VmRSS) before the clients connect and at the run's end.
#                                        target: growth < 20 MB, no client misses a line
#   3. a ledger of R runs (default 1,000; one-step requests run by `stella daemon --once`),
#      served by `stella serve`: GET /api/v1/runs?limit=50, median of 20 (target < 50 ms at
#      10,000 runs; this bench stops at 1,000 to stay within minutes)
#      baseline: `stella runs list --json` on the same ledger, median of 5 (the same scan,
#      every run printed, and a process start).
# Usage: bench/http.sh [--quick]   (--quick: 100 lines, 20 clients, 100 runs; for CI)
# Needs bash, git and python3 (and cargo, unless STELLA_BIN names a built stella binary).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
case "${1:-}" in
  --quick) quick=true ;;
  "") ;;
  *) echo "usage: bench/http.sh [--quick]" >&2; exit 2 ;;
esac
lines=500; clients=200; runs=1000
if $quick; then lines=100; clients=20; runs=100; fi

source bench/lib.sh
bench_needs git python3

work=$(mktemp -d)
pypid=
cleanup() {
  local pid
  if [[ -n "$pypid" ]] && kill -0 "$pypid" 2> /dev/null; then
    kill -TERM "$pypid" 2> /dev/null || true
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

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
g() { git -c user.name=Bench -c user.email=bench@example.com -c commit.gpgsign=false -c gc.auto=0 "$@"; }

repo=$work/repo
mkdir -p "$repo/packs/talk"
g -C "$repo" init -q -b main
git -C "$repo" config user.name Bench
git -C "$repo" config user.email bench@example.com
(cd "$repo" && "$stella" init . > /dev/null)
printf 'branch: main\ncommit: { batchMs: 2000 }\n' > "$repo/.stella/config.yaml"
cat > "$repo/packs/talk/pack.yaml" <<EOF
apiVersion: stella/v1
kind: TaskPack
metadata: { name: talk, version: "1.0.0" }
spec:
  steps:
    - id: talk
      run: { uses: builtin:exec, with: { argv: [bash, -c, 'for i in \$(seq 1 $lines); do echo "L\$i \$EPOCHREALTIME"; sleep 0.01; done'] } }
EOF
mkdir -p "$repo/packs/true"
cat > "$repo/packs/true/pack.yaml" <<'EOF'
apiVersion: stella/v1
kind: TaskPack
metadata: { name: "true", version: "1.0.0" }
spec:
  steps:
    - { id: t, run: { uses: builtin:exec, with: { argv: [/bin/true] } } }
EOF
g -C "$repo" add -A
g -C "$repo" commit -q -m "stella init"
echo '{}' > "$work/inputs.yaml"

cat > "$work/bench.py" <<'PY'
import http.client, os, re, signal, statistics, subprocess, sys, threading, time

STELLA, WORK, REPO = os.environ["STELLA"], os.environ["WORK"], os.environ["REPO"]
LINES, CLIENTS, RUNS = int(os.environ["LINES"]), int(os.environ["CLIENTS"]), int(os.environ["RUNS"])
GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"]
LINE = re.compile(r'L(\d+) (\d+\.\d+)')


def run(cmd):
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)


def request(run_id):
    run([STELLA, "run", "request", "packs/talk", "--inputs", os.path.join(WORK, "inputs.yaml"), "--id", run_id])
    run(GIT + ["add", "-A"])
    run(GIT + ["commit", "-q", "-m", f"request {run_id}"])


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class SseClient(threading.Thread):
    """A client of GET /api/v1/events: arrival - printed time of each line of `run_id`."""

    def __init__(self, port, run_id):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.request("GET", "/api/v1/events")
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        self.run_id, self.lat, self.seen, self.done = run_id, [], set(), threading.Event()

    def run(self):
        try:
            for raw in self.resp:
                now = time.time()
                line = raw.decode(errors="replace")
                if not line.startswith("data: ") or f'"run":"{self.run_id}"' not in line:
                    continue
                if '"type":"step.log"' in line:
                    m = LINE.search(line)
                    if m:
                        self.seen.add(int(m.group(1)))
                        self.lat.append((now - float(m.group(2))) * 1000)
                elif '"type":"run.succeeded"' in line or '"type":"run.failed"' in line:
                    break
        finally:
            self.done.set()


class Tail(threading.Thread):
    """The baseline: the run's journal read directly, looking for new bytes every 0.5 ms."""

    def __init__(self, run_id):
        super().__init__(daemon=True)
        self.path = os.path.join(REPO, ".git", "stella", "journal", f"{run_id}.ndjson")
        self.lat, self.done = [], threading.Event()

    def run(self):
        while not os.path.exists(self.path):
            time.sleep(0.0005)
        buf = b""
        with open(self.path, "rb") as f:
            while True:
                chunk = f.read()
                if not chunk:
                    time.sleep(0.0005)
                    continue
                now = time.time()
                buf += chunk
                *whole, buf = buf.split(b"\n")
                for raw in whole:
                    line = raw.decode(errors="replace")
                    if '"type":"step.log"' in line:
                        m = LINE.search(line)
                        if m:
                            self.lat.append((now - float(m.group(2))) * 1000)
                    if '"type":"run.succeeded"' in line or '"type":"run.failed"' in line:
                        self.done.set()
                        return


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


daemon = subprocess.Popen([STELLA, "daemon", "--repo", ".", "--http", "127.0.0.1:0"], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
with open(os.path.join(WORK, "pids"), "a") as f:
    f.write(f"{daemon.pid}\n")
signal.signal(signal.SIGTERM, lambda *_: (daemon.kill(), sys.exit(143)))
port = None
for line in daemon.stdout:
    m = re.search(r"http on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
    if "ready" in line:
        break
threading.Thread(target=lambda: [None for _ in daemon.stdout], daemon=True).start()

# 1. latency, against tail -F of the journal.
sse, tail = SseClient(port, "lat"), Tail("lat")
sse.start(); tail.start()
request("lat")
if not (sse.done.wait(300) and tail.done.wait(60)):
    sys.exit("bench: the run did not finish")
a, b = statistics.median(sse.lat), statistics.median(tail.lat)
pa, pb = pct(sse.lat, 99), pct(tail.lat, 99)
print(f"1. step line -> SSE client, {len(sse.lat)} of {LINES} lines")
print(f"   SSE  (GET /api/v1/events)   median {a:6.2f} ms   p99 {pa:6.2f} ms   (target < 20 ms, < 100 ms)")
print(f"   journal read directly       median {b:6.2f} ms   p99 {pb:6.2f} ms   (baseline)")
print(f"   ratio SSE / journal         median {a / b:6.2f}x     p99 {pa / pb:6.2f}x")

# 2. many clients on one run.
time.sleep(1)
before = rss_kb(daemon.pid)
crowd = [SseClient(port, "crowd") for _ in range(CLIENTS)]
for c in crowd:
    c.start()
time.sleep(0.5)
request("crowd")
peak = before
deadline = time.monotonic() + 600
while not all(c.done.is_set() for c in crowd) and time.monotonic() < deadline:
    peak = max(peak, rss_kb(daemon.pid))
    time.sleep(0.05)
missing = sum(LINES - len(c.seen) for c in crowd)
whole = sum(1 for c in crowd if len(c.seen) == LINES)
lat = [x for c in crowd for x in c.lat]
print(f"2. {CLIENTS} SSE clients on one run of {LINES} lines")
print(f"   clients that received every line: {whole} of {CLIENTS} ({missing} lines missed in all)")
print(f"   daemon VmRSS before {before / 1024:.1f} MB, peak {peak / 1024:.1f} MB, growth {(peak - before) / 1024:.1f} MB (target < 20 MB)")
print(f"   latency over all clients: median {statistics.median(lat):.2f} ms, p99 {pct(lat, 99):.2f} ms")
daemon.send_signal(signal.SIGTERM)
daemon.wait(30)

# 3. a list page on a ledger of RUNS runs.
print(f"bench: building a ledger of {RUNS} runs", file=sys.stderr)
for i in range(RUNS):
    run([STELLA, "run", "request", "packs/true", "--inputs", os.path.join(WORK, "inputs.yaml"), "--id", f"run-{i:05d}"])
run(GIT + ["add", "-A"])
run(GIT + ["commit", "-q", "-m", f"{RUNS} requests"])
subprocess.run([STELLA, "daemon", "--once", "--repo", "."], cwd=REPO, check=True, capture_output=True, timeout=120 + 5 * RUNS)
serve = subprocess.Popen([STELLA, "serve", "--repo", ".", "--http", "127.0.0.1:0"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
with open(os.path.join(WORK, "pids"), "a") as f:
    f.write(f"{serve.pid}\n")
port = int(re.search(r"http on http://127\.0\.0\.1:(\d+)", serve.stdout.readline()).group(1))


def get_page():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t = time.perf_counter()
    c.request("GET", "/api/v1/runs?limit=50")
    r = c.getresponse()
    body = r.read()
    dt = time.perf_counter() - t
    assert r.status == 200 and body.count(b'"planHash"') == 50, (r.status, body[:200])
    c.close()
    return dt


def cli_list():
    t = time.perf_counter()
    subprocess.run([STELLA, "runs", "list", "--json"], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t


get_page()
page = statistics.median(get_page() for _ in range(20)) * 1000
cli = statistics.median(cli_list() for _ in range(5)) * 1000
print(f"3. a ledger of {RUNS} runs")
print(f"   GET /api/v1/runs?limit=50   median {page:7.1f} ms   (target < 50 ms at 10,000 runs)")
print(f"   stella runs list --json     median {cli:7.1f} ms   (baseline)")
print(f"   ratio API / CLI                    {page / cli:6.2f}x")
serve.send_signal(signal.SIGTERM)
serve.wait(30)
PY

STELLA=$stella WORK=$work REPO=$repo LINES=$lines CLIENTS=$clients RUNS=$runs python3 "$work/bench.py" &
pypid=$!
wait "$pypid"
