#!/usr/bin/env bash
# Side-by-side load comparison on loopback: a fixed-body nginx backend, then the same
# traffic through switchyard and through nginx as a proxy (keepalive to the backend),
# plus the backend directly as a baseline. Prints requests/s, p50/p99 latency and the
# CPU seconds each proxy process used per 10,000 requests. Run by hand, not by CI:
#
#   sudo apt-get install -y nginx-light wrk     # once
#   bash benches/load.sh [seconds=10] [connections=64] [threads=1]
#
# Everything binds 127.0.0.1 only and every run is bounded by `seconds`.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}; CONNS=${2:-64}; THREADS=${3:-1}
BACKEND_PORT=18081; NGINX_PORT=18082; SY_PORT=18083
command -v nginx >/dev/null || { echo "nginx not found: apt-get install -y nginx-light" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }
WORK=$(mktemp -d); trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > "$WORK/backend.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/backend.nginx.pid; error_log $WORK/backend.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:$BACKEND_PORT; location / { default_type text/plain; return 200 "$BODY"; } } }
NGX
cat > "$WORK/proxy.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/proxy.nginx.pid; error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream app { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
cat > "$WORK/switchyard.toml" <<TOML
[[listeners]]
addr = "127.0.0.1:$SY_PORT"
[log]
access_log = "off"
[admin]
enabled = false
[runtime]
workers = 1
[pools.app]
servers = ["127.0.0.1:$BACKEND_PORT"]
keepalive = 64
[[routes]]
name = "all"
pool = "app"
TOML

cargo build --release -q
# Pinning: both proxies alone on core 0 (one worker each); backend and load tool on core 1.
PROXY_CPU=${PROXY_CPU:-0}; OTHER_CPU=${OTHER_CPU:-1}
taskset -c "$OTHER_CPU" nginx -c "$WORK/backend.conf" & echo $! > "$WORK/backend.pid"
taskset -c "$PROXY_CPU" nginx -c "$WORK/proxy.conf" & echo $! > "$WORK/nginx.pid"
taskset -c "$PROXY_CPU" ./target/release/switchyard --config "$WORK/switchyard.toml" --log-level warn & echo $! > "$WORK/sy.pid"

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
wait_port $BACKEND_PORT; wait_port $NGINX_PORT; wait_port $SY_PORT

# CPU ticks (utime+stime) of a process and its children threads.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# nginx master forks one worker; measure the worker.
worker_of() { pgrep -P "$1" | head -1; }
HZ=$(getconf CLK_TCK)

run() { # name port pid
  local name=$1 port=$2 pid=${3:-}
  local t0=0; [ -n "$pid" ] && t0=$(ticks "$pid")
  local out; out=$(taskset -c "$OTHER_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$port/" 2>&1)
  local reqs rps p50 p99 errs cpu="-"
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  if [ -n "$pid" ]; then
    local t1; t1=$(ticks "$pid")
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.3f", (b-a)/hz/n*10000 }')
  fi
  printf "%-12s %12s %10s %10s %14s  %s\n" "$name" "$rps" "$p50" "$p99" "$cpu" "${errs:-0 errors}"
}

echo "machine: $(nproc) cores, $(uname -r); wrk -t$THREADS -c$CONNS -d${DUR}s, 1 KiB responses"
printf "%-12s %12s %10s %10s %14s  %s\n" target req/s p50 p99 "cpu-s/10k req" errors
run backend $BACKEND_PORT
NGINX_WORKER=$(worker_of "$(cat "$WORK/nginx.pid")")
for round in 1 2 3; do
  run switchyard $SY_PORT "$(cat "$WORK/sy.pid")"
  run nginx $NGINX_PORT "$NGINX_WORKER"
done
echo "both proxies: 1 worker pinned to core $PROXY_CPU; backend and wrk on core $OTHER_CPU."
