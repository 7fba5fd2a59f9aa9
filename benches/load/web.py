#!/usr/bin/env python3
"""Static files and gzip, side by side with nginx, on loopback.

Both proxies run one worker and serve the same directory: nginx with `sendfile on`,
`etag on`, `gzip on` (level 5, `gzip_proxied any`); switchyard with a `root` route and
`[compression]` level 5. wrk drives each phase for `--duration` s:

1. a 1 KiB file, 64 keep-alive connections;
2. a 1 MiB file, 16 connections;
3. the 1 KiB file with `If-None-Match` (every answer a 304), 64 connections;
4. a 100 KiB JSON answer from a keep-alive backend, gzipped (`Accept-Encoding: gzip`),
   16 connections.

For each: requests/s, p99, and the proxy's CPU time per request (user + system, from
/proc, the nginx master and its worker summed).

    python3 benches/load/web.py [--duration 10] [--bin target/release/switchyard]

Needs wrk and nginx (apt-get install -y wrk nginx-light). Everything binds 127.0.0.1
and every phase is bounded in time.
"""
import asyncio, os, re, shutil, subprocess, sys, tempfile, urllib.request

from run import bench_args, start_switchyard_with, stop_all, wait_port  # the side-by-side suite's, beside this file

BACKEND, NGINX, SWITCHYARD = 19281, 19282, 19283
TICK = os.sysconf("SC_CLK_TCK")


def report_json():
    row = '{"item":"ITEM-0001","warehouse":"Stores - X","qty":12.5},'
    s = '{"message":['
    while len(s) < 100 * 1024:
        s += row
    return (s + "{}]}").encode()


async def backend(port):
    body = report_json()
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def conn(r, w):
        try:
            while True:
                await r.readuntil(b"\r\n\r\n")
                w.write(answer)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    await asyncio.start_server(conn, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


def start_nginx(tmp, files):
    conf = os.path.join(tmp, "nginx.conf")
    open(conf, "w").write(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; etag on;
  include /etc/nginx/mime.types;
  gzip on; gzip_comp_level 5; gzip_min_length 256; gzip_proxied any; gzip_vary on;
  gzip_types application/json application/javascript text/css;
  upstream app {{ server 127.0.0.1:{BACKEND}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{NGINX};
    location /static {{ root {files}; }}
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}""")
    return subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)


def start_switchyard(tmp, binary, files):
    return start_switchyard_with(tmp, binary, SWITCHYARD, f"""
[compression]
level = 5
min_length = 256
[pools.app]
servers = ["127.0.0.1:{BACKEND}"]
[[routes]]
name = "static"
match.path_prefix = "/static"
root = "{files}"
[[routes]]
name = "app"
pool = "app"
""", workers=1)


def cpu_seconds(pid):
    """User + system CPU of `pid` and its children (nginx's worker), in seconds."""
    pids = [pid]
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def wrk(port, path, conns, duration, tmp, headers):
    lua = os.path.join(tmp, "h.lua")
    open(lua, "w").write("".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)).get("99")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, p99, int(bad.group(1)) if bad else 0


def etag(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.headers["ETag"]


def check_gzip(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/report",
                                 headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.headers.get("Content-Encoding"), len(r.read())


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "backend":
        asyncio.run(backend(int(sys.argv[2])))
        return
    a = bench_args(10, ("wrk", "nginx"), "apt-get install -y wrk nginx-light")
    tmp = tempfile.mkdtemp(prefix="switchyard-web-")
    os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user
    files = os.path.join(tmp, "files")
    os.makedirs(os.path.join(files, "static"))
    open(os.path.join(files, "static/small.js"), "wb").write(b"x" * 1024)
    open(os.path.join(files, "static/big.bin"), "wb").write(os.urandom(1 << 20))
    procs = [subprocess.Popen([sys.executable, __file__, "backend", str(BACKEND)])]
    try:
        wait_port(BACKEND)
        nginx = start_nginx(tmp, files)
        sy = start_switchyard(tmp, a.bin, files)
        procs += [nginx, sy]
        wait_port(NGINX)
        wait_port(SWITCHYARD)
        for name, port in (("nginx", NGINX), ("switchyard", SWITCHYARD)):
            enc, size = check_gzip(port)
            if enc != "gzip":
                raise SystemExit(f"{name} did not gzip the JSON answer")
            print(f"{name}: 100 KiB JSON gzipped to {size} bytes", flush=True)
        print("| phase | proxy | req/s | p99 | CPU µs/request | non-2xx/3xx |")
        print("|---|---|---|---|---|---|")
        phases = [
            ("1 KiB file, 64 conns", "/static/small.js", 64, {}),
            ("1 MiB file, 16 conns", "/static/big.bin", 16, {}),
            ("1 KiB file 304, 64 conns", "/static/small.js", 64, "etag"),
            ("100 KiB JSON gzip, 16 conns", "/api/report", 16, {"Accept-Encoding": "gzip"}),
        ]
        for label, path, conns, headers in phases:
            for name, port, proc in (("nginx", NGINX, nginx), ("switchyard", SWITCHYARD, sy)):
                h = {"If-None-Match": etag(port, path)} if headers == "etag" else headers
                c0 = cpu_seconds(proc.pid)
                rps, total, p99, bad = wrk(port, path, conns, a.duration, tmp, h)
                c1 = cpu_seconds(proc.pid)
                per = (c1 - c0) / max(total, 1) * 1e6
                print(f"| {label} | {name} | {rps:.0f} | {p99} | {per:.1f} | {bad} |", flush=True)
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
