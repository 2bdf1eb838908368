#!/usr/bin/env bash
# bench/instructions.sh TREE [N]  - instructions per request of one otari tree, by thread.
#
# CPU time per request varies by 10% or more from run to run on a shared VM, which hides a
# 5% regression. Instruction counts do not: this runs one gateway (a source tree, as in
# cpu_rounds.sh) under valgrind's callgrind, sends N (1000) chat completions one after the
# other (concurrency 1; STREAM=1 for streams) after a warm-up, and prints the user-space
# instructions per request of each thread: the event loop (1), the usage writer (usually 3)
# and the small ones (worker threads). Kernel time (the network) is not counted: the figure
# is the part of the CPU cost that otari's own code decides.
#
# Under valgrind a request takes about twenty times as long, so the write-behind window is
# stretched by as much (usage_flush_interval FLUSH=4 s instead of 0.2 s): each usage batch
# then holds as many rows as in real time, and per-batch costs weigh what they really weigh.
# The key and price caches' TTL is stretched alike (auth_cache_ttl TTL=40 s instead of 2 s):
# their periodic reads then weigh per request what they weigh in real time.
#
#   git worktree add /tmp/otari-before <commit>
#   bash bench/instructions.sh /tmp/otari-before; bash bench/instructions.sh "$PWD"
#
# Needs valgrind (apt-get install -y valgrind). Everything runs on loopback.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { sed -n '2,19p' "$0" >&2; exit 64; }
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 69; }
TREE=$(cd "$1" && pwd)
N=${2:-1000}
# sys.executable, not the command: a pyenv shim is a shell script valgrind cannot run, and the
# path is not resolved further so that a virtual environment's packages stay on the path.
PY=$(python3 -c 'import sys; print(sys.executable)')
WORK=${BENCH_WORK:-/tmp/otari-instructions}
MOCK_PORT=${MOCK_PORT:-18000}
PORT=${OTARI_BENCH_PORT:-18300}
MOCK_PYTHON=${MOCK_PYTHON:-${TMPDIR:-/tmp}/bench-venv/bin/python}

bash "$HERE/harness/setup.sh" >/dev/null
rm -rf "$WORK" && mkdir -p "$WORK"
export MOCK_URL=http://127.0.0.1:$MOCK_PORT/v1 MOCK_API_KEY=${MOCK_API_KEY:-sk-mock-upstream-key}
# shellcheck source=common.sh
. "$HERE/common.sh"
MOCK_PORT=$MOCK_PORT "$MOCK_PYTHON" "$HERE/harness/mock_upstream.py" >"$WORK/mock.log" 2>&1 &
pids+=($!)
gateway_config "$WORK/otari.db" "$PORT" "usage_flush_interval = ${FLUSH:-4}" \
  "auth_cache_ttl = ${TTL:-40}" >"$WORK/config.toml"
KEY=$(PYTHONPATH=$TREE "$PY" "$HERE/prepare.py" "sqlite:///$WORK/otari.db" mock)
# Instrumentation starts switched off (start-up at near full speed) and is switched on
# for the measured requests only.
(cd "$WORK" && HOME=$WORK PYTHONPATH=$TREE exec valgrind --tool=callgrind --trace-children=yes \
  --instr-atstart=no --separate-threads=yes --callgrind-out-file="$WORK/cg.%p.out" \
  "$PY" -m otari_cli serve --config "$WORK/config.toml") >"$WORK/otari.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$PORT/health/readiness" >/dev/null 2>&1 && break
  sleep 1
done
send() {
  STREAM=${STREAM:-0} "$PY" - "$PORT" "$KEY" "$1" <<'PY'
import http.client, json, os, sys
port, key, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = json.dumps({
    "model": "mock:gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there, how are you"}],
    "max_tokens": 64,
    "stream": os.environ.get("STREAM") == "1",
})
connection = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
for _ in range(n):
    connection.request("POST", "/v1/chat/completions", body, headers)
    answer = connection.getresponse()
    answer.read()
    assert answer.status == 200, answer.status
PY
}
send 50
GATEWAY=$(ss -ltnpH "sport = :$PORT" | grep -o "pid=[0-9]*" | head -1 | cut -d= -f2)
sleep 1
callgrind_control -i on "$GATEWAY" >/dev/null 2>&1
callgrind_control -z "$GATEWAY" >/dev/null 2>&1
send "$N"
sleep 2
callgrind_control -i off "$GATEWAY" >/dev/null 2>&1
callgrind_control -d "$GATEWAY" >/dev/null 2>&1
sleep 1
kill "$GATEWAY" 2>/dev/null || true
total=0
for dump in "$WORK"/cg."$GATEWAY".out.1-*; do
  count=$(grep -m1 '^totals:' "$dump" | awk '{print $2}')
  total=$((total + count))
  echo "thread ${dump##*-}: $((count / N)) instructions/request"
done
echo "$TREE: $((total / N)) instructions/request (user space, all threads, N=$N)"
