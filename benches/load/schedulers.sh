#!/bin/bash
# schedulers.sh [ROUNDS]: switchyard with two workers, once per `[runtime] scheduler`
# ("work-stealing" on :19184, "per-worker" on :19186), side by side against one nginx
# backend (:19181, core 1), interleaved: CPU µs per proxied request (user and system,
# all threads) at 5,000 req/s (64 keep-alive connections, 10 ms apart) and at
# saturation (64 connections), from `cpu.sh`. Both proxies may use both cores.
# Needs nginx, wrk and a release build (cargo build --release).
set -u
ROUNDS=${1:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${SWITCHYARD:-$HERE/../../target/release/switchyard}
W=$(mktemp -d /tmp/sy-schedulers.XXXX)
chmod 755 "$W"
body=$(head -c 1024 /dev/zero | tr '\0' x)
cat > "$W/backend.conf" <<EOC
worker_processes 1; daemon off; pid $W/b.pid; error_log $W/b.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:19181 backlog=4096;
    location / { default_type text/plain; return 200 "$body"; } } }
EOC
for mode in work-stealing per-worker; do
  port=$([ "$mode" = work-stealing ] && echo 19184 || echo 19186)
  cat > "$W/$mode.toml" <<EOC
[[listeners]]
addr = "127.0.0.1:$port"
[server]
header_timeout = "300s"
[admin]
enabled = false
[log]
access_log = "off"
[reload]
watch = false
[runtime]
workers = 2
scheduler = "$mode"
[pools.app]
servers = ["127.0.0.1:19181"]
keepalive = 64
[[routes]]
name = "all"
pool = "app"
EOC
done
cat > "$W/pace.lua" <<'EOC'
request = function() return wrk.format("GET", "/") end
delay = function() return 10 end
EOC
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
taskset -c 1 nginx -c "$W/backend.conf" 2>/dev/null & pids+=($!)
for mode in work-stealing per-worker; do
  taskset -c 0,1 "$BIN" --config "$W/$mode.toml" --log-level error < /dev/null > "$W/$mode.log" 2>&1 &
  pids+=($!)
done
for port in 19184 19186; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
WS=${pids[1]}; PW=${pids[2]}
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  echo "  5k   work-stealing: $("$HERE/cpu.sh" "$WS" 19184 5 -c64 -s "$W/pace.lua")"
  echo "  5k   per-worker:    $("$HERE/cpu.sh" "$PW" 19186 5 -c64 -s "$W/pace.lua")"
  echo "  sat  work-stealing: $("$HERE/cpu.sh" "$WS" 19184 4 -c64)"
  echo "  sat  per-worker:    $("$HERE/cpu.sh" "$PW" 19186 4 -c64)"
done
