#!/usr/bin/env bash
# bench/cpu_rounds.sh TREE [TREE ...]  - CPU ms per request of several otari trees, side by side.
#
# Starts one gateway per source tree (a checkout of otari, e.g. a `git worktree` of an older
# commit), all pinned to CPU 1 with auth, budget reservation and usage on, and the fake
# upstream on CPU 0; then ROUNDS (8) rounds in which each gateway in turn gets SECS (4) s of
# load at concurrency CONC (1; STREAM=1 for streams). Every round sees the same machine, so the
# medians compare the trees even on a busy host. Prints each tree's median CPU ms/request.
#
#   git worktree add /tmp/otari-before <commit>
#   bash bench/cpu_rounds.sh /tmp/otari-before "$PWD"
#   STREAM=1 bash bench/cpu_rounds.sh /tmp/otari-before "$PWD"
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_DIR=${HARNESS:-$HERE/harness}
WORK=${BENCH_WORK:-/tmp/otari-cpu-rounds}
MOCK_PORT=${MOCK_PORT:-18000}
BASE_PORT=${OTARI_BENCH_PORT:-18200}
export MOCK_URL=http://127.0.0.1:$MOCK_PORT/v1 MOCK_API_KEY=${MOCK_API_KEY:-sk-mock-upstream-key}
MOCK_PYTHON=${MOCK_PYTHON:-${TMPDIR:-/tmp}/bench-venv/bin/python}
[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 64; }

bash "$HARNESS_DIR/setup.sh" >/dev/null
rm -rf "$WORK" && mkdir -p "$WORK"
# shellcheck source=common.sh
. "$HERE/common.sh"
MOCK_PORT=$MOCK_PORT taskset -c 0 "$MOCK_PYTHON" "$HARNESS_DIR/mock_upstream.py" >"$WORK/mock.log" 2>&1 &
pids+=($!)

trees=("$@") gw_pids=() keys=() ports=()
for i in "${!trees[@]}"; do
  tree=$(cd "${trees[$i]}" && pwd) dir=$WORK/$i port=$((BASE_PORT + i))
  mkdir -p "$dir"
  gateway_config "$dir/otari.db" "$port" >"$dir/config.toml"
  keys[$i]=$(PYTHONPATH=$tree python "$HERE/prepare.py" "sqlite:///$dir/otari.db" mock)
  (cd "$dir" && HOME=$dir PYTHONPATH=$tree exec taskset -c 1 python -m otari_cli serve \
    --config "$dir/config.toml") >"$dir/otari.log" 2>&1 &
  gw_pids[$i]=$! ports[$i]=$port
  pids+=($!)
done
for port in "${ports[@]}"; do
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$port/health/readiness" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

for round in $(seq 1 "${ROUNDS:-8}"); do
  for i in "${!trees[@]}"; do
    line=$(STREAM=${STREAM:-0} WARMUP=1 LABEL="tree$i" TARGET_PIDS=${gw_pids[$i]} \
      "$HARNESS_DIR/run_bench.sh" "http://127.0.0.1:${ports[$i]}" \
      "Authorization: Bearer ${keys[$i]}" mock:gpt-4o-mini "${CONC:-1}" "${SECS:-4}")
    echo "$line" >>"$WORK/lines"
    echo "round $round ${trees[$i]}: $(grep -o 'gw_cpu_ms_per_req=[0-9.]*' <<<"$line")"
  done
done
python - "$WORK/lines" "${trees[@]}" <<'PY'
import re, statistics, sys
lines = open(sys.argv[1]).read().splitlines()
for i, tree in enumerate(sys.argv[2:]):
    cpu = [float(m.group(1)) for line in lines if f"label=tree{i} " in line
           for m in [re.search(r"gw_cpu_ms_per_req=([0-9.]+)", line)] if m]
    print(f"{tree}: median CPU ms/request {statistics.median(cpu):.3f} over {len(cpu)} rounds")
PY
