#!/usr/bin/env bash
# A local cluster on loopback: one placement manager (`pm`) and N data nodes.
#
#   scripts/cluster.sh start  N [BASE_DIR]   start pm and N data nodes
#   scripts/cluster.sh status [N] [BASE_DIR] which are running, and `es --pm ADDR cluster`
#   scripts/cluster.sh stop   [N] [BASE_DIR] SIGTERM each started pid, SIGKILL after a grace
#
# BASE_DIR (default ./cluster) holds, per process NAME (pm, node-0 … node-<N-1>): NAME.yaml (its
# config), NAME.pid, NAME.log and its data directory NAME-data. Ports: the pm on PM_PORT (default
# 12378) with metrics on PM_METRICS_PORT (9912); data node i on NODE_PORT_BASE+i (10911+i) with
# metrics on NODE_METRICS_PORT_BASE+i (9920+i). Release binaries are used when both exist,
# otherwise debug ones (built with `cargo build` when missing).
#
# Processes are only ever signalled by the pids this script wrote, and only while that pid
# still runs the program it started (checked in /proc): never by name.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
pm_port="${PM_PORT:-12378}"
pm_metrics_port="${PM_METRICS_PORT:-9912}"
node_port_base="${NODE_PORT_BASE:-10911}"
node_metrics_port_base="${NODE_METRICS_PORT_BASE:-9920}"
grace_seconds="${GRACE_SECONDS:-15}"
pm_address="127.0.0.1:$pm_port"

usage() {
    echo "usage: $0 start N [BASE_DIR] | status [N] [BASE_DIR] | stop [N] [BASE_DIR]" >&2
    exit 2
}

command="${1:-}"
[ -n "$command" ] || usage
shift
count=""
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
    count="$1"
    shift
fi
base="${1:-./cluster}"

binaries() {
    if [ -x "$target/release/pm" ] && [ -x "$target/release/data-node" ]; then
        bin_dir="$target/release"
    else
        bin_dir="$target/debug"
        if [ ! -x "$bin_dir/pm" ] || [ ! -x "$bin_dir/data-node" ]; then
            echo "building pm and data-node (debug)…"
            (cd "$root" && cargo build -p pm --bin pm -p node --bin data-node)
        fi
    fi
    echo "binaries: $bin_dir"
}

# The program a process NAME runs: pm or data-node.
program_of() {
    case "$1" in
        pm) echo pm ;;
        *) echo data-node ;;
    esac
}

# The pid in NAME.pid if that process still runs the program it was started as.
live_pid() {
    local name="$1" pid comm
    [ -f "$base/$name.pid" ] || return 1
    pid="$(cat "$base/$name.pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [ "$comm" = "$(program_of "$name")" ]
    echo "$pid"
}

# Waits until 127.0.0.1:PORT accepts connections, or the process NAME exits.
wait_listening() {
    local name="$1" port="$2" tries=0
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! live_pid "$name" >/dev/null; then
            echo "$name exited; the end of $base/$name.log:" >&2
            tail -n 20 "$base/$name.log" >&2 || true
            return 1
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ]; then
            echo "$name does not listen on port $port after 30 s; see $base/$name.log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Starts NAME: `launch NAME PORT PROGRAM CONFIG`.
launch() {
    local name="$1" port="$2" program="$3" config="$4"
    if pid="$(live_pid "$name")"; then
        echo "$name is already running (pid $pid); stop the cluster first" >&2
        return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use by another process: cannot start $name" >&2
        return 1
    fi
    "$bin_dir/$program" -c "$config" </dev/null >>"$base/$name.log" 2>&1 &
    echo $! >"$base/$name.pid"
    wait_listening "$name" "$port"
    echo "$name: pid $(cat "$base/$name.pid"), 127.0.0.1:$port, log $base/$name.log"
}

start() {
    [ -n "$count" ] && [ "$count" -ge 1 ] || usage
    binaries
    mkdir -p "$base"
    base="$(cd "$base" && pwd)"
    cat >"$base/pm.yaml" <<EOF
server:
  listen: $pm_address
storage:
  path: $base/pm-data
metrics:
  addr: 127.0.0.1:$pm_metrics_port
EOF
    launch pm "$pm_port" pm "$base/pm.yaml"
    local i
    for ((i = 0; i < count; i++)); do
        local port=$((node_port_base + i))
        cat >"$base/node-$i.yaml" <<EOF
server:
  listen: 127.0.0.1:$port
  workers: 1
store:
  path: $base/node-$i-data
  segment-size-bytes: 16777216
  cache-size-bytes: 16777216
pm:
  embedded: false
  addresses: [$pm_address]
metrics:
  addr: 127.0.0.1:$((node_metrics_port_base + i))
EOF
        launch "node-$i" "$port" data-node "$base/node-$i.yaml"
    done
    echo "cluster of $count data node(s) started; placement manager at $pm_address"
}

# Names with a pid file, data nodes first (they report OFFLINE to the pm as they stop).
names() {
    local file
    for file in "$base"/node-*.pid "$base"/pm.pid; do
        [ -f "$file" ] && basename "$file" .pid
    done
    return 0
}

status() {
    local name pid any=0
    for name in $(names); do
        any=1
        if pid="$(live_pid "$name")"; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
        fi
    done
    [ "$any" = 1 ] || echo "no cluster started in $base"
    local es=""
    for es in "$target/release/es" "$target/debug/es"; do
        [ -x "$es" ] && break
        es=""
    done
    if [ -n "$es" ] && "$es" --help 2>/dev/null | grep -q -- "--pm" &&
        "$es" --help 2>/dev/null | grep -qw cluster; then
        "$es" --pm "$pm_address" cluster || true
    else
        echo "(no es binary with \`es --pm ADDR cluster\` yet: cluster view skipped)"
    fi
}

stop() {
    local name stopped=() nodes=()
    for name in $(names); do
        [ "$name" = pm ] || nodes+=("$name")
    done
    # Data nodes first (each reports OFFLINE to the pm as it stops), then the pm.
    signal_and_wait "${nodes[@]}"
    signal_and_wait pm
    for name in $(names); do
        rm -f "$base/$name.pid"
    done
    if [ "${#stopped[@]}" -gt 0 ]; then
        echo "stopped: ${stopped[*]}"
    else
        echo "nothing running in $base"
    fi
}

# SIGTERM to the processes NAMES still running, then up to the grace period for them to exit,
# then SIGKILL to those still running. Adds the names signalled to `stopped`.
signal_and_wait() {
    local name pid waiting=() alive deadline=$((SECONDS + grace_seconds))
    for name in "$@"; do
        if pid="$(live_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            waiting+=("$name")
            stopped+=("$name")
        fi
    done
    while [ "${#waiting[@]}" -gt 0 ]; do
        alive=()
        for name in "${waiting[@]}"; do
            live_pid "$name" >/dev/null && alive+=("$name")
        done
        waiting=("${alive[@]}")
        [ "${#waiting[@]}" -eq 0 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            for name in "${waiting[@]}"; do
                if pid="$(live_pid "$name")"; then
                    echo "$name (pid $pid) still running after ${grace_seconds} s: SIGKILL" >&2
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            done
            break
        fi
        sleep 0.1
    done
}

case "$command" in
    start) start ;;
    status) status ;;
    stop) stop ;;
    *) usage ;;
esac
