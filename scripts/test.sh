#!/usr/bin/env bash
# The project's test command: every crate's unit, integration and doc tests.
#
# The run is bounded, so a test that hangs fails with a clear message instead of using up CI's
# time. The tests run in a process group of their own, and only that group is ever signalled:
# other work on the machine is never touched. On timeout the group gets SIGTERM first, so
# test harnesses and the servers they started can clean up (temp directories, child
# processes), then SIGKILL after a grace period.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

limit_seconds="${TEST_TIMEOUT_SECONDS:-1200}"
grace_seconds=20

cargo test --workspace --no-run

oom_kills() {
    # The kernel's count of OOM kills in this cgroup (v2 or v1), or nothing where unreadable.
    local events
    for events in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
        if [ -r "$events" ]; then
            awk '$1 == "oom_kill" { print $2 }' "$events"
            return
        fi
    done
}
oom_before="$(oom_kills)"

# setsid gives the run a session and process group of its own, whose id is its pid (a background
# job of a script is no group leader, so setsid does not fork). timeout, leading that group, sends
# SIGTERM to the whole group at the limit and SIGKILL after the grace period.
status=0
setsid timeout --kill-after="$grace_seconds" "$limit_seconds" cargo test --workspace &
group=$!
trap 'kill -TERM -- "-$group" 2>/dev/null || true' INT TERM
wait "$group" || status=$?
# Whatever the tests left running in their group (a server a failed test did not stop) goes too.
kill -KILL -- "-$group" 2>/dev/null || true

if [ "$status" -eq 124 ] || { [ "$status" -eq 137 ] && [ "$(oom_kills)" = "$oom_before" ]; }; then
    echo "test.sh: the test run exceeded ${limit_seconds} s and was stopped; a test hung" >&2
    exit 124
fi
oom_after="$(oom_kills)"
if [ -n "$oom_before" ] && [ -n "$oom_after" ] && [ "$oom_after" -gt "$oom_before" ]; then
    echo "test.sh: the kernel's OOM killer ended $((oom_after - oom_before)) process(es) during the run" >&2
fi
exit "$status"
