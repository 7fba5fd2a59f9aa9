#!/bin/sh
# Poll switchyard's /health/live several times a second and write 0 (live) or 1 (not)
# to the file keepalived's vrrp_track_file watches. keepalived's own vrrp_script polls
# at most once a second before keepalived 2.3.2; this loop notices a dead, stopping
# (SIGTERM closes the admin listener at once) or hung switchyard within ~100-300 ms.
#
#   switchyard-live.sh [URL] [FILE] [INTERVAL]
# Run it as a service (switchyard-live.service) on both nodes.
URL=${1:-http://127.0.0.1:9901/health/live}
FILE=${2:-/run/switchyard-keepalived/live}
INTERVAL=${3:-0.1}
mkdir -p "$(dirname "$FILE")"
last=""
while :; do
    if curl -fsS -o /dev/null --max-time 0.2 "$URL" 2>/dev/null; then v=0; else v=1; fi
    if [ "$v" != "$last" ]; then
        echo "$v" > "$FILE"
        last=$v
    fi
    sleep "$INTERVAL"
done
