#!/usr/bin/env bash
# Starts a JobManager here and a TaskManager per line of conf/workers: here for localhost
# lines, over ssh (in the same WEIR_HOME) for other hosts, as Flink's start-cluster.sh does.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/config.sh"
"$WEIR_HOME/bin/jobmanager.sh" start
workers="$WEIR_CONF_DIR/workers"
[[ -f "$workers" ]] || { echo "no $workers: no TaskManager started" >&2; exit 0; }
while read -r host || [[ -n "$host" ]]; do
    host="${host%%#*}"
    host="$(echo "$host" | tr -d '[:space:]')"
    [[ -z "$host" ]] && continue
    case "$host" in
        localhost | 127.0.0.1 | "$(uname -n)") "$WEIR_HOME/bin/taskmanager.sh" start ;;
        *) ssh -n "$host" -- "cd '$WEIR_HOME' && bin/taskmanager.sh start" ;;
    esac
done < "$workers"
