#!/usr/bin/env bash
# One command for the side-by-side suite (see README.md beside this file).
# Needs: apt-get install -y nginx-light haproxy wrk python3
exec python3 "$(dirname "$0")/run.py" "$@"
