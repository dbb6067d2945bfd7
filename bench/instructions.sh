#!/usr/bin/env bash
# Instructions per request under callgrind, beside nginx's: a measure that
# does not depend on the clock. See bench/README.md.
#   bench/instructions.sh                                  # print the counts
#   bench/instructions.sh --check bench/instructions.baseline.json --no-nginx
#   bench/instructions.sh --write bench/instructions.baseline.json
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sessiongate/target}"
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
cargo build --release --quiet --bin sessiongate
exec python3 bench/instructions.py --binary "$CARGO_TARGET_DIR/release/sessiongate" "$@"
