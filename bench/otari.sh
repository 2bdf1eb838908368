#!/usr/bin/env bash
# bench/otari.sh [compare|quick]  - load-test otari with the load harness in bench/harness.
#
#   quick    (default) one pinned otari (CPU 1), the bare FastAPI+aiohttp pass-through
#            (bench/floor.py, CPU 1, the floor) and the fake upstream (CPU 0); runs
#            non-streaming and streaming at concurrency 1, 16 and 64 (CONCS), floor then
#            otari, SECS (10) s each, prints the BENCH lines and then one table
#            (bench/table.py): req/s, p50, p99, CPU ms/req for both, and otari's RSS idle
#            and after the load.
#   compare  the harness's full A/B (compare.sh with the custom adapter; ~18 min,
#            CONCS/DELAYS/ROUNDS/SECS shorten it).
#   streams  only the translated-stream rows of quick (see below), and their table.
#   route    what a route costs: non-streaming at concurrency 1, the same request with
#            model mock:gpt-4o-mini and with model "bench" (a fallback route whose first
#            target is that model), alternated for ROUNDS (3) rounds of SECS (10) s each.
#
# quick and streams also measure streams by translation at concurrency 1 and 16 (TCONCS):
# chat completions to the OpenAI-type fake (pass-through), chat completions to an
# Anthropic-type provider (translated), and Anthropic messages to the OpenAI-type fake
# (translated); bench/anthropic_upstream.py is the fake for both provider types.
#
# Auth, budget reservation and usage are all on: the key belongs to a user with a budget.
# Everything runs on loopback and every load run is bounded by wrk -d.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${HARNESS:-$HERE/harness}
MODE=${1:-quick}
WORK=${BENCH_WORK:-/tmp/otari-bench}
PORT=${OTARI_BENCH_PORT:-18100}
FLOOR_PORT=${FLOOR_BENCH_PORT:-$((PORT + 1))}
MOCK_PORT=${MOCK_PORT:-18000}
export MOCK_URL=http://127.0.0.1:$MOCK_PORT/v1
export MOCK_API_KEY=${MOCK_API_KEY:-sk-mock-upstream-key}
MOCK_PYTHON=${MOCK_PYTHON:-${BENCH_TMP:-${TMPDIR:-/tmp}}/bench-venv/bin/python}

bash "$SHARED/setup.sh" >/dev/null
rm -rf "$WORK" && mkdir -p "$WORK"
# shellcheck source=common.sh
. "$HERE/common.sh"
{ gateway_config "$WORK/otari.db" "$PORT"; cat <<TOML; } >"$WORK/config.toml"
[providers.mock2]
type = "openai"
base_url = "$MOCK_URL"
api_key = "$MOCK_API_KEY"
[providers.anth]
type = "anthropic"
base_url = "http://127.0.0.1:$MOCK_PORT"
api_key = "$MOCK_API_KEY"
[routes.bench]
strategy = "fallback"
targets = ["mock:gpt-4o-mini", "mock2:gpt-4o-mini"]
TOML
KEY=$(python "$HERE/prepare.py" "sqlite:///$WORK/otari.db" mock mock2 anth)
export HOME=$WORK
START="exec otari serve --config $WORK/config.toml"

if [ "$MODE" = compare ]; then
  GW_START_CMD=$START GW_URL=http://127.0.0.1:$PORT GW_AUTH="Authorization: Bearer $KEY" \
    GW_MODEL=mock:gpt-4o-mini GW_NAME=otari OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-otari} \
    MOCK_PORT=$MOCK_PORT bash "$SHARED/compare.sh" custom
  exit
fi

rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
MOCK_PORT=$MOCK_PORT taskset -c 0 "$MOCK_PYTHON" "$HERE/anthropic_upstream.py" >"$WORK/mock.log" 2>&1 &
pids+=($!)
(taskset -c 1 bash -c "$START") >"$WORK/otari.log" 2>&1 &
OTARI_PID=$!
pids+=($OTARI_PID)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/health/readiness" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$MOCK_PORT/v1/models" >/dev/null 2>&1 || true
if [ "$MODE" = route ]; then
  for _ in $(seq 1 "${ROUNDS:-3}"); do
    for model in mock:gpt-4o-mini bench; do
      LABEL=$model TARGET_PIDS=$OTARI_PID "$SHARED/run_bench.sh" "http://127.0.0.1:$PORT" "Authorization: Bearer $KEY" "$model" 1 "${SECS:-10}"
    done
  done
  exit
fi
RESULTS=$WORK/results.txt
: >"$RESULTS"
# The translated-stream rows: (label, URL path, model, body file or "" for the chat body).
cat >"$WORK/messages.json" <<JSON
{"model":"mock:gpt-4o-mini","max_tokens":128,"temperature":0.2,"stream":true,"system":"You are a helpful assistant. Answer concisely.","messages":[{"role":"user","content":"In two sentences, explain what an LLM API gateway does and why teams use one."}]}
JSON
streams() {
  curl -fsS -N -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    -d @"$WORK/messages.json" "http://127.0.0.1:$PORT/v1/messages" | grep -q message_stop \
    || { echo "messages -> OpenAI stream check failed" >&2; exit 2; }
  for conc in ${TCONCS:-1 16}; do
    STREAM=1 LABEL=pass TARGET_PIDS=$OTARI_PID RESULTS_FILE=$RESULTS "$SHARED/run_bench.sh" \
      "http://127.0.0.1:$PORT" "Authorization: Bearer $KEY" mock:gpt-4o-mini "$conc" "${SECS:-10}"
    STREAM=1 LABEL=chat-anthropic TARGET_PIDS=$OTARI_PID RESULTS_FILE=$RESULTS "$SHARED/run_bench.sh" \
      "http://127.0.0.1:$PORT" "Authorization: Bearer $KEY" anth:gpt-4o-mini "$conc" "${SECS:-10}"
    STREAM=1 SKIP_CHECK=1 BODY_FILE=$WORK/messages.json LABEL=messages-openai TARGET_PIDS=$OTARI_PID \
      RESULTS_FILE=$RESULTS "$SHARED/run_bench.sh" "http://127.0.0.1:$PORT/v1/messages" \
      "Authorization: Bearer $KEY" mock:gpt-4o-mini "$conc" "${SECS:-10}"
  done
}
if [ "$MODE" = streams ]; then
  echo "RSS label=otari when=idle kib=$(rss $OTARI_PID)" | tee -a "$RESULTS"
  streams
  echo "RSS label=otari when=loaded kib=$(rss $OTARI_PID)" | tee -a "$RESULTS"
  python "$HERE/table.py" "$RESULTS"
  exit
fi
(taskset -c 1 python "$HERE/floor.py" --port "$FLOOR_PORT") >"$WORK/floor.log" 2>&1 &
FLOOR_PID=$!
pids+=($FLOOR_PID)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$FLOOR_PORT/health/readiness" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "RSS label=otari when=idle kib=$(rss $OTARI_PID)" | tee -a "$RESULTS"
echo "RSS label=floor when=idle kib=$(rss $FLOOR_PID)" | tee -a "$RESULTS"
for stream in 0 1; do
  for conc in ${CONCS:-1 16 64}; do
    STREAM=$stream LABEL=floor TARGET_PIDS=$FLOOR_PID RESULTS_FILE=$RESULTS "$SHARED/run_bench.sh" "http://127.0.0.1:$FLOOR_PORT" "" gpt-4o-mini "$conc" "${SECS:-10}"
    STREAM=$stream LABEL=otari TARGET_PIDS=$OTARI_PID RESULTS_FILE=$RESULTS "$SHARED/run_bench.sh" "http://127.0.0.1:$PORT" "Authorization: Bearer $KEY" mock:gpt-4o-mini "$conc" "${SECS:-10}"
  done
done
streams
echo "RSS label=otari when=loaded kib=$(rss $OTARI_PID)" | tee -a "$RESULTS"
echo "RSS label=floor when=loaded kib=$(rss $FLOOR_PID)" | tee -a "$RESULTS"
python "$HERE/table.py" "$RESULTS"
