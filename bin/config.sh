#!/usr/bin/env bash
# Shared by the start and stop scripts: where weir, its configuration, logs and pid files are.
# Each can be set in the environment:
#   WEIR_HOME      the installation (default: the directory above bin/)
#   WEIR_CONF_DIR  holds weir.toml and workers (default: $WEIR_HOME/conf)
#   WEIR_LOG_DIR   process logs (default: $WEIR_HOME/log)
#   WEIR_PID_DIR   pid files (default: /tmp, as Flink's)
#   WEIR_BIN       the weir program (default: $WEIR_HOME/bin/weir, else weir on the PATH,
#                  else $WEIR_HOME/target/release/weir)

bin_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WEIR_HOME="${WEIR_HOME:-$(dirname "$bin_dir")}"
WEIR_CONF_DIR="${WEIR_CONF_DIR:-$WEIR_HOME/conf}"
WEIR_LOG_DIR="${WEIR_LOG_DIR:-$WEIR_HOME/log}"
WEIR_PID_DIR="${WEIR_PID_DIR:-/tmp}"
if [[ -z "${WEIR_BIN:-}" ]]; then
    if [[ -x "$WEIR_HOME/bin/weir" ]]; then
        WEIR_BIN="$WEIR_HOME/bin/weir"
    elif command -v weir > /dev/null; then
        WEIR_BIN="$(command -v weir)"
    else
        WEIR_BIN="$WEIR_HOME/target/release/weir"
    fi
fi
export WEIR_HOME WEIR_CONF_DIR WEIR_LOG_DIR WEIR_PID_DIR WEIR_BIN

# daemon.sh-style start and stop of one kind of process, with a pid file per kind listing the
# pids it started, one per line; stop takes the newest (or all).
weir_pid_file() {
    echo "$WEIR_PID_DIR/weir-${USER:-weir}-$1.pid"
}

weir_start() {
    local kind="$1"
    shift
    if [[ ! -x "$WEIR_BIN" ]]; then
        echo "no weir program at $WEIR_BIN (build it: cargo build --release -p weir-cli)" >&2
        return 1
    fi
    mkdir -p "$WEIR_LOG_DIR" "$WEIR_PID_DIR"
    local pid_file count log
    pid_file="$(weir_pid_file "$kind")"
    count=$( (grep -c . "$pid_file" 2> /dev/null) || true)
    log="$WEIR_LOG_DIR/weir-${USER:-weir}-$kind-${count:-0}-$(uname -n).log"
    nohup "$WEIR_BIN" "$kind" --config "$WEIR_CONF_DIR/weir.toml" "$@" > "$log" 2>&1 < /dev/null &
    echo $! >> "$pid_file"
    echo "Starting $kind daemon (pid $!) on host $(uname -n), log $log."
}

weir_stop() {
    local kind="$1" which="$2"
    local pid_file
    pid_file="$(weir_pid_file "$kind")"
    if [[ ! -s "$pid_file" ]]; then
        echo "No $kind daemon to stop on host $(uname -n)."
        return 0
    fi
    local pids
    if [[ "$which" == all ]]; then
        pids="$(cat "$pid_file")"
        rm -f "$pid_file"
    else
        pids="$(tail -n 1 "$pid_file")"
        sed -i '$d' "$pid_file"
    fi
    for pid in $pids; do
        if kill -0 "$pid" 2> /dev/null; then
            echo "Stopping $kind daemon (pid $pid) on host $(uname -n)."
            kill "$pid"
        else
            echo "No $kind daemon (pid $pid) is running anymore on $(uname -n)."
        fi
    done
}
