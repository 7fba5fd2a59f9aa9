#!/bin/sh
# frappe_docker's nginx-entrypoint.sh, for switchyard: the config comes from the same
# environment (BACKEND, SOCKETIO, FRAPPE_SITE_NAME_HEADER, UPSTREAM_REAL_IP_ADDRESS,
# UPSTREAM_REAL_IP_HEADER, UPSTREAM_REAL_IP_RECURSIVE, PROXY_READ_TIMEOUT,
# CLIENT_MAX_BODY_SIZE) and the sites volume. BACKEND and SOCKETIO may be names
# (`backend:8000`): they are re-resolved while running, so a recreated container is
# followed without a restart, and switchyard starts before they exist.
set -e
BENCH="${BENCH:-/home/frappe/frappe-bench}"
CONF="${SWITCHYARD_CONFIG:-/tmp/switchyard/switchyard.toml}"
mkdir -p "$(dirname "$CONF")"
switchyard frappe-bench "$BENCH" --from-env --output "$CONF"
# The admin API on every address of the container, for its health checks; the
# access log on stdout, as docker logs expects.
cat >> "$CONF" <<TOML

[admin]
addr = "0.0.0.0:9901"

[reload]
watch = false
TOML
# SWITCHYARD_CHECK=1: only check the config (what tests/container_examples.rs runs).
if [ -n "${SWITCHYARD_CHECK:-}" ]; then
  exec switchyard --config "$CONF" --check
fi
exec switchyard --config "$CONF"
