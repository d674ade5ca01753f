#!/usr/bin/env bash
# Stops the TaskManagers of conf/workers and the JobManagers of conf/masters (here, or over
# ssh; without conf/masters, the JobManager here).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/config.sh"

# The distinct hosts of conf/masters or conf/workers other than this one.
weir_remote_hosts_of() {
    local line
    while read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        line="$(echo "$line" | tr -d '[:space:]')"
        line="${line%%:*}"
        case "$line" in
            "" | localhost | 127.0.0.1 | "$(uname -n)") ;;
            *) echo "$line" ;;
        esac
    done < "$1" | sort -u
}

workers="$WEIR_CONF_DIR/workers"
if [[ -f "$workers" ]]; then
    "$WEIR_HOME/bin/taskmanager.sh" stop-all
    for host in $(weir_remote_hosts_of "$workers"); do
        ssh -n "$host" -- "cd '$WEIR_HOME' && bin/taskmanager.sh stop-all"
    done
fi
"$WEIR_HOME/bin/jobmanager.sh" stop
masters="$WEIR_CONF_DIR/masters"
if [[ -f "$masters" ]]; then
    for host in $(weir_remote_hosts_of "$masters"); do
        ssh -n "$host" -- "cd '$WEIR_HOME' && bin/jobmanager.sh stop"
    done
fi
