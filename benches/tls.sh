#!/usr/bin/env bash
# TLS handshake rate, TLS keep-alive HTTP/1.1 and HTTP/2 over TLS: switchyard vs nginx and
# HAProxy, with h2load, on loopback. req/s and the proxy's CPU µs per request.
# Run by hand:   apt-get install -y nginx-light haproxy nghttp2-client openssl
#                bash benches/tls.sh [requests=20000]
# One fixed-body nginx backend; every proxy terminates TLS (ECDSA P-256 certificate,
# TLS 1.3) and forwards over keep-alive HTTP/1.1. Each proxy runs one worker pinned to
# core 0; the backend and h2load run on core 1. Bounded by the request counts.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
BACKEND=18181; NGINX=18182; SY=18183; HAP=18184
for t in nginx haproxy h2load openssl; do command -v $t >/dev/null || { echo "$t not found" >&2; exit 2; }; done
WORK=$(mktemp -d); chmod 755 "$WORK"; trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/both.pem"
chmod 644 "$WORK"/*.pem
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > "$WORK/backend.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/b.nginx.pid; error_log $WORK/b.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { default_type text/plain; return 200 "$BODY"; } } }
NGX
cat > "$WORK/proxy.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/p.nginx.pid; error_log $WORK/p.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream app { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$NGINX ssl; http2 on;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
# nginx 1.22 spells http2 on the listen line.
nginx -v 2>&1 | grep -q "nginx/1.2[0-4]" && sed -i 's/ ssl; http2 on;/ ssl http2;/' "$WORK/proxy.conf"
cat > "$WORK/sy.toml" <<TOML
[[listeners]]
addr = "127.0.0.1:$SY"
[[listeners.tls]]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[runtime]
workers = 1
[admin]
enabled = false
[log]
access_log = "off"
[pools.app]
servers = ["127.0.0.1:$BACKEND"]
[[routes]]
name = "all"
pool = "app"
TOML
cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAP ssl crt $WORK/both.pem alpn h2,http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND
HAP
cargo build --release -q
taskset -c 1 nginx -c "$WORK/backend.conf" & echo $! > "$WORK/backend.pid"
taskset -c 0 nginx -c "$WORK/proxy.conf" & echo $! > "$WORK/nginx.pid"
taskset -c 0 haproxy -f "$WORK/haproxy.cfg" & echo $! > "$WORK/haproxy.pid"
taskset -c 0 ./target/release/switchyard --config "$WORK/sy.toml" --log-level warn & echo $! > "$WORK/sy.pid"
for p in $BACKEND $NGINX $SY $HAP; do for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done; done
rate() { awk '/finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) print $(i-1)}'; }
ok() { awk '/requests:/ {print $8" ok, "$10" failed"}'; }
# The process doing a proxy's work: nginx's worker, the others themselves.
worker() {
  local pid c; pid=$(cat "$WORK/$1.pid"); c=$(pgrep -P "$pid" | head -1 || true); echo "${c:-$pid}"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run NAME PID TEST H2LOAD-ARGS...: one h2load run; req/s, CPU µs per request, result.
run() {
  local name=$1 pid=$2 test=$3; shift 3
  local t0 t1 out n
  t0=$(ticks "$pid"); out=$(taskset -c 1 h2load "$@" 2>&1); t1=$(ticks "$pid")
  n=$(awk '/requests:/ {print $8}' <<<"$out")
  printf "%-11s %-30s %10s %10s  %s\n" "$name" "$test" "$(rate <<<"$out")" \
    "$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "-" }')" \
    "$(ok <<<"$out")"
}
echo "machine: $(nproc) cores; h2load $(h2load --version | head -1 | awk '{print $2}'); $(nginx -v 2>&1); $(haproxy -v | head -1 | awk '{print $1, $3}')"
printf "%-11s %-30s %10s %10s  %s\n" proxy test "req/s" "CPU us/req" result
for round in 1 2 3; do
  for who in switchyard:$SY:sy nginx:$NGINX:nginx haproxy:$HAP:haproxy; do
    IFS=: read -r name port file <<<"$who"; pid=$(worker "$file")
    url="https://localhost:$port/"
    # One request per connection: the rate is the TLS handshake rate.
    run "$name" "$pid" "TLS handshakes (1 req/conn)" -n $((N / 10)) -c $((N / 10)) -t 1 --h1 "$url"
    run "$name" "$pid" "TLS keep-alive HTTP/1.1, 16 c" -n "$N" -c 16 -t 1 --h1 "$url"
    run "$name" "$pid" "HTTP/2 TLS, 16 c x 16 streams" -n "$N" -c 16 -m 16 -t 1 "$url"
  done
done
