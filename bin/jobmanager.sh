#!/usr/bin/env bash
# Starts or stops the JobManager on this host: bin/jobmanager.sh start|stop
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/config.sh"
case "${1:-}" in
    start) shift; weir_start jobmanager "$@" ;;
    stop) weir_stop jobmanager all ;;
    *) echo "Usage: jobmanager.sh start|stop" >&2; exit 1 ;;
esac
