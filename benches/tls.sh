#!/usr/bin/env bash
# TLS handshake rate and HTTP/2 request rate, switchyard vs nginx, with h2load, on loopback.
# Run by hand:   apt-get install -y nginx-light nghttp2-client openssl
#                bash benches/tls.sh [requests=20000]
# One fixed-body nginx backend; both proxies terminate TLS (ECDSA P-256 certificate,
# TLS 1.3) and forward over keep-alive HTTP/1.1. Bounded by the request counts.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
BACKEND=18181; NGINX=18182; SY=18183
for t in nginx h2load openssl; do command -v $t >/dev/null || { echo "$t not found" >&2; exit 2; }; done
WORK=$(mktemp -d); chmod 755 "$WORK"; trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
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
http { access_log off; keepalive_requests 1000000;
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
cargo build --release -q
nginx -c "$WORK/backend.conf" & echo $! > "$WORK/backend.pid"
nginx -c "$WORK/proxy.conf" & echo $! > "$WORK/nginx.pid"
./target/release/switchyard --config "$WORK/sy.toml" --log-level warn & echo $! > "$WORK/sy.pid"
for p in $BACKEND $NGINX $SY; do for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done; done
rate() { awk '/finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) print $(i-1)}'; }
ok() { awk '/requests:/ {print $8" ok, "$10" failed"}'; }
echo "machine: $(nproc) cores; h2load $(h2load --version | head -1 | awk '{print $2}'); $(nginx -v 2>&1)"
printf "%-12s %-28s %12s  %s\n" proxy test "req/s" result
for round in 1 2 3; do
  for who in switchyard:$SY nginx:$NGINX; do
    name=${who%%:*}; port=${who##*:}
    # One request per connection: the rate is the TLS handshake rate.
    out=$(h2load -n $((N/10)) -c $((N/10)) -t 1 --h1 "https://localhost:$port/" 2>&1)
    printf "%-12s %-28s %12s  %s\n" "$name" "TLS handshakes (1 req/conn)" "$(rate <<<"$out")" "$(ok <<<"$out")"
    out=$(h2load -n $N -c 16 -m 16 -t 1 "https://localhost:$port/" 2>&1)
    printf "%-12s %-28s %12s  %s\n" "$name" "HTTP/2, 16 conns x 16 streams" "$(rate <<<"$out")" "$(ok <<<"$out")"
  done
done
