#!/usr/bin/env bash
# Replication benchmark in one run (docs/benchmark.md, section "Replication"):
#
#   scripts/bench-replication.sh [DIR] [extra es-bench replication options]
#
# Builds the release `pm`, `data-node` and `es-bench`, then runs `es-bench replication`, which
# starts a placement manager with three data nodes and a lone data node with its own placement
# manager (data and logs in a fresh directory under DIR, default ./bench-data, removed at the
# end), appends 64 KiB batches through the SDK with R=3/A=2 on the three nodes and with
# R=1/A=1 on the lone node in alternating rounds (MB/s, bytes the nodes wrote per payload byte,
# p50/p90/p99), then SIGKILLs a replica of the open range KILLS times (default 12) and reports
# the gap from each kill to the first acknowledgement in the next range (p50, max).
# Every process it starts is killed by its own pid; nothing is signalled by name.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
dir="${1:-./bench-data}"
[ $# -gt 0 ] && shift
mkdir -p "$dir"

(cd "$root" && cargo build --release -p pm --bin pm -p node --bin data-node -p benches --bin es-bench)

echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$target/release/es-bench" replication \
    --dir "$dir" \
    --bin-dir "$target/release" \
    --batch-bytes 65536 \
    --in-flight 32 \
    --streams 1 \
    --warmup-secs 1 \
    --duration-secs "${DURATION_SECS:-6}" \
    --rounds "${ROUNDS:-2}" \
    --kills "${KILLS:-12}" \
    "$@"
