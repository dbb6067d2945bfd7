#!/usr/bin/env bash
# Redis Cluster and Sentinel failovers under traffic from two sessiongate
# instances (tests/redis_failover.rs): prints, per fault, the writes
# answered 200, how many of them are missing afterwards, the requests that
# failed and the time until every writer succeeded again. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sessiongate/target}"
cargo test --test redis_failover -- --ignored --nocapture --test-threads 1 2>&1 |
  grep -E '^FAILOVER|^test |test result'
