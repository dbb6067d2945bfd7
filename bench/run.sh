#!/usr/bin/env bash
# The end-to-end benchmark: sessiongate against nginx as a plain reverse
# proxy, on loopback, interleaved rounds, medians. See bench/README.md.
#   bench/run.sh                      # full run (about 10 minutes)
#   bench/run.sh --duration 2 --rounds 1 --smoke
#   bench/run.sh scale                # session reads at 1,000 and 1,000,000 live sessions
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sessiongate/target}"

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --quiet --bin sessiongate
if [ "${1:-}" = scale ]; then
  shift
  exec python3 bench/scale.py --binary "$CARGO_TARGET_DIR/release/sessiongate" "$@"
fi
exec python3 bench/run.py --binary "$CARGO_TARGET_DIR/release/sessiongate" "$@"
