#!/usr/bin/env bash
# Starts a JobManager per line of conf/masters (`host[:rest-port]`; without the file, one here)
# and a TaskManager per line of conf/workers: here for localhost lines, over ssh (in the same
# WEIR_HOME) for other hosts, as Flink's start-cluster.sh does. With high availability the
# JobManagers elect a leader among themselves and the others stand by.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/config.sh"

# `host` of a line of conf/masters or conf/workers, comments and blanks dropped.
weir_hosts_of() {
    local line
    while read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        line="$(echo "$line" | tr -d '[:space:]')"
        [[ -n "$line" ]] && echo "$line"
    done < "$1"
}

weir_is_local() {
    case "$1" in
        localhost | 127.0.0.1 | "$(uname -n)") return 0 ;;
        *) return 1 ;;
    esac
}

masters="$WEIR_CONF_DIR/masters"
if [[ -f "$masters" ]]; then
    for master in $(weir_hosts_of "$masters"); do
        host="${master%%:*}"
        args=()
        [[ "$master" == *:* ]] && args=(--rest-port "${master##*:}")
        if weir_is_local "$host"; then
            "$WEIR_HOME/bin/jobmanager.sh" start "${args[@]}"
        else
            ssh -n "$host" -- "cd '$WEIR_HOME' && bin/jobmanager.sh start ${args[*]}"
        fi
    done
else
    "$WEIR_HOME/bin/jobmanager.sh" start
fi
workers="$WEIR_CONF_DIR/workers"
[[ -f "$workers" ]] || { echo "no $workers: no TaskManager started" >&2; exit 0; }
for host in $(weir_hosts_of "$workers"); do
    if weir_is_local "$host"; then
        "$WEIR_HOME/bin/taskmanager.sh" start
    else
        ssh -n "$host" -- "cd '$WEIR_HOME' && bin/taskmanager.sh start"
    fi
done
