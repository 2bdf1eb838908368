# bench/common.sh - sourced by otari.sh, cpu_rounds.sh and instructions.sh.
#
# gateway_config DB_FILE PORT [LINE ...]  prints the config of a benchmarked gateway: SQLite at
#   DB_FILE, the bench master key, warnings only, PORT, any top-level LINEs (e.g.
#   "usage_flush_interval = 4"), then the OpenAI-type fake upstream as provider "mock"
#   (MOCK_URL, MOCK_API_KEY). Append further tables after it.
# pids / cleanup  background processes to stop on exit: `pids+=($!)` after starting one.

gateway_config() {
  local db=$1 port=$2
  shift 2
  cat <<TOML
database_url = "sqlite:///$db"
master_key = "sk-bench-master"
bootstrap_api_key = false
log_level = "warning"
port = $port
TOML
  for line in "$@"; do echo "$line"; done
  cat <<TOML
[providers.mock]
type = "openai"
base_url = "$MOCK_URL"
api_key = "$MOCK_API_KEY"
TOML
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
