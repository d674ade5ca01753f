#!/usr/bin/env bash
# Starts a TaskManager on this host, or stops the newest (stop) or every one (stop-all):
#   bin/taskmanager.sh start [--slots N] ...|stop|stop-all
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/config.sh"
case "${1:-}" in
    start) shift; weir_start taskmanager "$@" ;;
    stop) weir_stop taskmanager newest ;;
    stop-all) weir_stop taskmanager all ;;
    *) echo "Usage: taskmanager.sh start|stop|stop-all" >&2; exit 1 ;;
esac
