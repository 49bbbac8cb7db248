#!/usr/bin/env bash
# The project's test command: every crate's unit, integration and doc tests.
#
# The run is bounded, so a test that hangs fails CI with a clear message instead of using up
# its time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --no-run
status=0
timeout --signal=KILL 900 cargo test --workspace || status=$?
if [ "$status" -eq 137 ] || [ "$status" -eq 124 ]; then
    echo "test.sh: the test run exceeded 900 s; a test hung" >&2
    pkill -KILL -f 'target/debug/deps/' || true
fi
exit "$status"
