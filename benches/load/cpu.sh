#!/bin/bash
# cpu.sh PID PORT SECONDS [wrk args...]: run wrk (pinned to core 1) against 127.0.0.1:PORT
# and print the user and system CPU µs per request of process PID from /proc.
# Paired runs of two proxies side by side: see BENCHMARKS.md ("Performance round 2").
P=$1; PORT=$2; D=$3; shift 3
read u0 s0 < <(awk '{print $14, $15}' /proc/$P/stat)
out=$(taskset -c 1 wrk -t1 -d${D}s "$@" http://127.0.0.1:$PORT/ )
read u1 s1 < <(awk '{print $14, $15}' /proc/$P/stat)
n=$(echo "$out" | awk '/requests in/ {print $1}')
hz=$(getconf CLK_TCK)
python3 -c "u=($u1-$u0)/$hz*1e6/$n; s=($s1-$s0)/$hz*1e6/$n; print(f'requests {$n}  user {u:.1f} µs  sys {s:.1f} µs  total {u+s:.1f} µs/req')"
