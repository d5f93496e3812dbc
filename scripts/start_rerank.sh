#!/bin/sh
# Run the reranker stack in the background on your own box (no Docker): start | stop | restart | status | tail
#
# It runs `reranker serve` (vLLM + the authenticated gateway under supervisord) with a pid file and a log
# file. Settings are the usual environment variables, e.g.
#
#   MODEL_NAME=BAAI/bge-reranker-v2-m3 GATEWAY_PORT=8000 sh scripts/start_rerank.sh start
#   sh scripts/start_rerank.sh status     # running? ready? (exit 0 only when ready)
#   sh scripts/start_rerank.sh tail       # follow the log
#   sh scripts/start_rerank.sh stop       # stops every process of the stack
#
# Where things go (override with these variables):
#   RERANKER_BIN       the reranker command (default: .venv/bin/reranker beside this script, else `reranker` on PATH)
#   RERANKER_STATE_DIR state, token and logs (default: ${XDG_STATE_HOME:-~/.local/state}/reranker)
#   RERANKER_PID_FILE  default: $RERANKER_STATE_DIR/serve.pid
#   RERANKER_RUN_LOG   default: $RERANKER_STATE_DIR/logs/serve.log
#   START_WAIT         seconds `start` waits for the model to be ready (default 0: return once the gateway answers)
#   STOP_TIMEOUT       seconds `stop` waits before killing what is left (default 60)
set -u

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
if [ -z "${RERANKER_BIN:-}" ]; then
    if [ -x "$script_dir/../.venv/bin/reranker" ]; then
        RERANKER_BIN="$script_dir/../.venv/bin/reranker"
    else
        RERANKER_BIN=reranker
    fi
fi
state_dir=${RERANKER_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/reranker}
pid_file=${RERANKER_PID_FILE:-$state_dir/serve.pid}
run_log=${RERANKER_RUN_LOG:-$state_dir/logs/serve.log}
start_wait=${START_WAIT:-0}
stop_timeout=${STOP_TIMEOUT:-60}

say() { printf '%s\n' "start_rerank: $*"; }
fail() { printf '%s\n' "start_rerank: $*" >&2; exit 1; }

# Is this process alive? (An exited process nobody has reaped yet, a zombie, is not.)
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [ -r "/proc/$1/stat" ] || return 0 # no /proc (macOS): trust kill -0
    case $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) in Z*) return 1 ;; esac
    return 0
}

# The pid of our running `reranker serve`, or nothing (a stale pid file is removed).
running_pid() {
    [ -f "$pid_file" ] || return 1
    pid=$(cat "$pid_file" 2>/dev/null)
    case $pid in '' | *[!0-9]*) rm -f "$pid_file"; return 1 ;; esac
    # Alive and still ours (the pid may have been reused by another program since).
    if alive "$pid" && { [ ! -d /proc ] || grep -q reranker "/proc/$pid/cmdline" 2>/dev/null; }; then
        printf '%s\n' "$pid"
        return 0
    fi
    rm -f "$pid_file"
    return 1
}

health() { # prints the gateway's answer; exit status 0 when ready
    "$RERANKER_BIN" health "$@"
}

do_start() {
    if pid=$(running_pid); then
        say "already running (pid $pid); logs: $run_log"
        return 0
    fi
    command -v "$RERANKER_BIN" >/dev/null 2>&1 || fail "cannot run $RERANKER_BIN: install the project (make venv) or set RERANKER_BIN"
    mkdir -p "$(dirname -- "$pid_file")" "$(dirname -- "$run_log")" || fail "cannot create $(dirname -- "$pid_file")"
    # A session of its own (setsid) so closing this terminal does not send it SIGHUP; stdin from /dev/null.
    if command -v setsid >/dev/null 2>&1; then
        setsid "$RERANKER_BIN" serve </dev/null >>"$run_log" 2>&1 &
    else
        nohup "$RERANKER_BIN" serve </dev/null >>"$run_log" 2>&1 &
    fi
    pid=$!
    printf '%s\n' "$pid" >"$pid_file"
    # Settings mistakes make `reranker serve` exit at once; otherwise wait until the gateway answers.
    waited=0
    while :; do
        if ! alive "$pid"; then
            rm -f "$pid_file"
            tail -n 5 "$run_log" >&2
            fail "reranker serve exited at once (see above; full log: $run_log)"
        fi
        if "$RERANKER_BIN" health --json 2>/dev/null | grep -q '"http_status"'; then
            break # the gateway answers (ready, or the model is still loading)
        fi
        if [ "$waited" -ge 60 ]; then
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "started (pid $pid); logs: $run_log"
    if [ "$start_wait" -gt 0 ]; then
        health --wait "$start_wait" || fail "not ready after $start_wait s; see $run_log"
    else
        health || say "the model is loading: \`sh $0 status\` says when it is ready"
    fi
    return 0
}

do_stop() {
    if ! pid=$(running_pid); then
        say "not running"
        return 0
    fi
    # reranker serve stops supervisord, vLLM and the gateway on SIGTERM, and kills any leftover itself.
    kill -TERM "$pid" 2>/dev/null
    waited=0
    while alive "$pid"; do
        if [ "$waited" -ge "$stop_timeout" ]; then
            say "still running after $stop_timeout s: killing it and its session"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    rm -f "$pid_file"
    say "stopped"
    return 0
}

do_status() {
    if pid=$(running_pid); then
        printf 'running (pid %s): ' "$pid"
        health
        return $?
    fi
    say "not running"
    return 3
}

do_tail() {
    [ -f "$run_log" ] || fail "no log yet at $run_log"
    exec tail -n 100 -F "$run_log"
}

case ${1:-} in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop && do_start ;;
    status) do_status ;;
    tail) do_tail ;;
    *)
        printf '%s\n' "usage: sh $0 start|stop|restart|status|tail" >&2
        exit 2
        ;;
esac
