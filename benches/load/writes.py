#!/usr/bin/env python3
"""Writes over upstream keep-alive, side by side with nginx, on loopback.

The backend behaves like gunicorn's gthread worker as Frappe runs it: HTTP/1.1
keep-alive, and an idle connection is closed after 2 s (gunicorn's default
`--keep-alive 2`). It counts the connections it accepts, so the table shows how many
upstream connections each proxy opened.

1. Throughput: wrk POSTs (a 100-byte form body) over 64 keep-alive connections for
   `--duration` s: req/s, p50, p99, upstream connections opened.
2. The keep-alive race: 16 clients each send a POST, then pause 1.8-2.2 s (around the
   backend's idle close), for `--race` s. Any answer but 200 is counted; for switchyard,
   `X-Switchyard-Outcome: unknown` marks a write that lost the race (never re-sent).
3. Pool churn: wrk GETs over 64 keep-alive connections for 4 s, and the upstream
   connections opened meanwhile.

    python3 benches/load/writes.py [--duration 10] [--race 20] [--bin target/release/switchyard]

Needs wrk and nginx (apt-get install -y wrk nginx-light). Everything binds 127.0.0.1
and every phase is bounded in time.
"""
import asyncio, os, random, re, shutil, socket, subprocess, sys, tempfile, time

from run import bench_args, start_switchyard_with, stop_all, wait_port  # the side-by-side suite's, beside this file

BACKEND, NGINX, SWITCHYARD = 19181, 19182, 19183
IDLE_CLOSE = 2.0


async def backend(port):
    """HTTP/1.1 keep-alive server that closes a connection idle for IDLE_CLOSE s."""
    stats = {"conns": 0, "reqs": 0}

    async def conn(r, w):
        stats["conns"] += 1
        try:
            while True:
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), IDLE_CLOSE)
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if m:
                    await r.readexactly(int(m.group(1)))
                stats["reqs"] += 1
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await w.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def report(r, w):
        w.write(f"{stats['conns']} {stats['reqs']}\n".encode())
        await w.drain()
        w.close()

    await asyncio.start_server(conn, "127.0.0.1", port, backlog=1024)
    await asyncio.start_server(report, "127.0.0.1", port + 50)
    await asyncio.Event().wait()


def backend_stats():
    with socket.create_connection(("127.0.0.1", BACKEND + 50), 2) as s:
        conns, reqs = s.makefile().readline().split()
    return int(conns), int(reqs)


def start_nginx(tmp):
    conf = os.path.join(tmp, "nginx.conf")
    open(conf, "w").write(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream app {{ server 127.0.0.1:{BACKEND}; keepalive 64; keepalive_timeout 60s; }}
  server {{
    listen 127.0.0.1:{NGINX};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}""")
    return subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)


def start_switchyard(tmp, binary):
    return start_switchyard_with(tmp, binary, SWITCHYARD, f"""
[pools.app]
servers = ["127.0.0.1:{BACKEND}"]
[[routes]]
name = "all"
pool = "app"
""", workers=1)


def wrk(port, duration, tmp, method="POST"):
    lua = os.path.join(tmp, "post.lua")
    body = 'wrk.body = string.rep("a", 100)\n' if method == "POST" else ""
    open(lua, "w").write(f'wrk.method = "{method}"\n{body}'
                         'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n')
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{duration}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{port}/api/method/frappe.client.save"],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat.get("50"), lat.get("99"), int(errors.group(1)) if errors else 0


async def race_client(port, until, tally):
    r = w = None
    while time.time() < until:
        try:
            if w is None:
                r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"POST /api/resource/Sales%20Order HTTP/1.1\r\nHost: erp\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            await r.readexactly(int(m.group(1)) if m else 0)
            tally["sent"] += 1
            if not head.startswith(b"HTTP/1.1 200"):
                tally["failed"] += 1
            if b"x-switchyard-outcome: unknown" in head.lower():
                tally["unknown"] += 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            tally["failed"] += 1
            w = None
        await asyncio.sleep(random.uniform(IDLE_CLOSE - 0.2, IDLE_CLOSE + 0.2))


async def race(port, seconds):
    tally = {"sent": 0, "failed": 0, "unknown": 0}
    until = time.time() + seconds
    await asyncio.gather(*(race_client(port, until, tally) for _ in range(16)))
    return tally


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "backend":
        asyncio.run(backend(int(sys.argv[2])))
        return
    a = bench_args(10, ("wrk", "nginx"), "apt-get install -y wrk nginx-light", [("--race", 20)])
    tmp = tempfile.mkdtemp(prefix="switchyard-writes-")
    procs = [subprocess.Popen([sys.executable, __file__, "backend", str(BACKEND)])]
    try:
        wait_port(BACKEND)
        procs.append(start_nginx(tmp))
        procs.append(start_switchyard(tmp, a.bin))
        wait_port(NGINX)
        wait_port(SWITCHYARD)
        print("| proxy | POST req/s | p50 | p99 | non-2xx | upstream conns opened |"
              " race: POSTs | race: failed | race: outcome unknown | race: upstream conns |"
              " GET 4 s: req/s | GET: upstream conns opened |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, port in (("nginx", NGINX), ("switchyard", SWITCHYARD)):
            c0, _ = backend_stats()
            rps, p50, p99, non2xx = wrk(port, a.duration, tmp)
            c1, _ = backend_stats()
            time.sleep(IDLE_CLOSE + 0.5)
            c2, _ = backend_stats()
            t = asyncio.run(race(port, a.race))
            c3, _ = backend_stats()
            grps, _, _, _ = wrk(port, 4, tmp, "GET")
            c4, _ = backend_stats()
            print(f"| {name} | {rps:.0f} | {p50} | {p99} | {non2xx} | {c1 - c0} |"
                  f" {t['sent']} | {t['failed']} | {t['unknown']} | {c3 - c2} |"
                  f" {grps:.0f} | {c4 - c3} |", flush=True)
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
