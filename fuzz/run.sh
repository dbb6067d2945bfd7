#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for RUNS executions or
# MAX_TIME seconds, whichever comes first, and prints each one's count.
#   fuzz/run.sh                      # every target, 10 million runs or an hour each
#   RUNS=100000 fuzz/run.sh cookie   # one target, briefly
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`);
# merge_lua also needs redis-server, which this script starts and stops.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
MAX_TIME=${MAX_TIME:-3600}
all=(request_head response_head chunked cookie path_and_route config proxy_header merge_patch merge_lua resp_reply)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

cargo +nightly fuzz build

redis_pid=
cleanup() { [ -z "$redis_pid" ] || kill "$redis_pid" 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  dirs=("corpus/$t")
  [ -d "seeds/$t" ] && dirs+=("seeds/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  if [ "$t" = merge_lua ] && [ -z "$redis_pid" ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --logfile /dev/null &
    redis_pid=$!
    export FUZZ_REDIS_URL="redis://127.0.0.1:$port/"
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  echo "== $t"
  status=0
  cargo +nightly fuzz run "$t" "${dirs[@]}" -- \
    -runs="$RUNS" -max_total_time="$MAX_TIME" -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || status=$?
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "logs/$t.log" || true
  grep -E '^(==[0-9]+==ERROR|SUMMARY|.*panicked)' "logs/$t.log" | head -5 || true
  echo "$t: exit $status (log: fuzz/logs/$t.log)"
done
