#!/usr/bin/env bash
# Stops the TaskManagers of conf/workers (here, or over ssh) and the JobManager here.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/config.sh"
workers="$WEIR_CONF_DIR/workers"
if [[ -f "$workers" ]]; then
    remote=()
    while read -r host || [[ -n "$host" ]]; do
        host="${host%%#*}"
        host="$(echo "$host" | tr -d '[:space:]')"
        [[ -z "$host" ]] && continue
        case "$host" in
            localhost | 127.0.0.1 | "$(uname -n)") ;;
            *) remote+=("$host") ;;
        esac
    done < "$workers"
    "$WEIR_HOME/bin/taskmanager.sh" stop-all
    for host in "${remote[@]}"; do
        ssh -n "$host" -- "cd '$WEIR_HOME' && bin/taskmanager.sh stop-all"
    done
fi
"$WEIR_HOME/bin/jobmanager.sh" stop
