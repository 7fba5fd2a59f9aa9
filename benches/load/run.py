#!/usr/bin/env python3
"""Side-by-side proxy benchmark on loopback: the backend directly, nginx, HAProxy and
switchyard, each proxy with one worker pinned alone on one core; the backend (nginx,
2 workers) and the load tool on the other core. Scenarios run interleaved (nginx,
haproxy, switchyard, nginx, ...) `--rounds` times; the table shows medians with
min-max and the ratio to nginx. Everything binds 127.0.0.1 and every run is bounded.

    python3 benches/load/run.py [--rounds 3] [--duration 10] [--quick]
"""
import argparse, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORTS = {"backend": 19081, "nginx": 19082, "haproxy": 19083, "switchyard": 19084}
# HTTP/2 over cleartext with prior knowledge (h2load's default for http://). switchyard
# detects the HTTP/2 preface on its ordinary listener; nginx and HAProxy need their own.
H2_PORTS = {"nginx": 19085, "haproxy": 19087, "switchyard": 19084}
PROXY_CPU, OTHER_CPU = "0", "1"
HZ = os.sysconf("SC_CLK_TCK")


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def start_switchyard_with(tmp, binary, port, body, name="switchyard", workers=None):
    """A switchyard for a benchmark: one listener on `port`, no access log, admin API
    or file watcher; `body` is the rest of the config (pools, routes)."""
    conf = os.path.join(tmp, f"{name}.toml")
    runtime = f"[runtime]\nworkers = {workers}\n" if workers else ""
    open(conf, "w").write(
        f'[[listeners]]\naddr = "127.0.0.1:{port}"\n{runtime}[log]\naccess_log = "off"\n'
        f"[admin]\nenabled = false\n[reload]\nwatch = false\n{body}")
    return subprocess.Popen([binary, "--config", conf, "--log-level", "error"])


def bench_args(duration, tools, hint, more=()):
    """The scripts' common arguments (--duration, --bin, and `more` as (flag, default)),
    after checking that `tools` are installed (`hint` says how)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=duration)
    for flag, default in more:
        ap.add_argument(flag, type=int, default=default)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/switchyard"))
    a = ap.parse_args()
    for tool in tools:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: {hint}")
    return a


def stop_all(procs):
    """Terminate the processes a run started, then kill what does not exit in 5 s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def children(pid):
    out = sh(f"pgrep -P {pid}").stdout.split()
    return [int(p) for p in out]


def ticks(pids):
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total


def status_kib(pids, field):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# The request-header work switchyard always does (and a Frappe deployment's proxy must:
# see frappe-nginx.md), given to nginx and HAProxy too so all three do the same work per
# request. `--bare` leaves it out of nginx and HAProxy (switchyard cannot turn it off).
NGINX_HEADERS = (
    "proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $remote_addr; "
    "proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-Proto $scheme; "
    "proxy_set_header X-Forwarded-Host $http_host; proxy_set_header X-Request-Id $request_id; "
    "add_header X-Request-Id $request_id;"
)
HAPROXY_HEADERS = """  unique-id-format %{+X}o%[rand,hex]%[rand,hex]
  http-request set-header X-Forwarded-For %[src]
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Id %[unique-id]
  http-response set-header X-Request-Id %[unique-id]
"""


def setup(work, maxconn, bare=False):
    body = "x" * 1024
    os.chmod(work, 0o755)
    with open(os.path.join(work, "big"), "wb") as f:
        f.write(os.urandom(1024 * 1024) * 10)
    os.chmod(os.path.join(work, "big"), 0o644)
    open(f"{work}/backend.conf", "w").write(f"""worker_processes 2; daemon off; pid {work}/b.pid; error_log {work}/b.err warn;
events {{ worker_connections 20000; }}
http {{ access_log off; keepalive_requests 10000000; sendfile on;
  server {{ listen 127.0.0.1:{PORTS['backend']} reuseport backlog=4096;
    location = /big {{ root {work}; }}
    location / {{ default_type text/plain; return 200 "{body}"; }} }} }}
""")
    open(f"{work}/nginx.conf", "w").write(f"""worker_processes 1; daemon off; pid {work}/n.pid; error_log {work}/n.err warn;
worker_rlimit_nofile 40000;
events {{ worker_connections 20000; }}
http {{ access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  upstream app {{ server 127.0.0.1:{PORTS['backend']}; keepalive 64; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; {'' if bare else NGINX_HEADERS} }} }}
  server {{ listen 127.0.0.1:{H2_PORTS['nginx']} http2 backlog=4096;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; {'' if bare else NGINX_HEADERS} }} }} }}
""")
    open(f"{work}/haproxy.cfg", "w").write(f"""global
  nbthread 1
  maxconn {maxconn}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  bind 127.0.0.1:{H2_PORTS['haproxy']} proto h2
  default_backend be
{'' if bare else HAPROXY_HEADERS}backend be
  server s1 127.0.0.1:{PORTS['backend']}
""")
    open(f"{work}/sy.toml", "w").write(f"""[[listeners]]
addr = "127.0.0.1:{PORTS['switchyard']}"
[server]
header_timeout = "300s"
[admin]
enabled = false
[log]
access_log = "off"
[reload]
watch = false
[runtime]
workers = 1
[pools.app]
servers = ["127.0.0.1:{PORTS['backend']}"]
keepalive = 64
[[routes]]
name = "all"
pool = "app"
""")
    open(f"{work}/p999.lua", "w").write("""
done = function(summary, latency, requests)
  io.write(string.format("P999 %d\\n", latency:percentile(99.9)))
end
""")


def start(work, procs):
    def run(name, cmd, cpu):
        procs[name] = subprocess.Popen(f"exec taskset -c {cpu} {cmd}", shell=True, stdout=subprocess.DEVNULL, stderr=open(f"{work}/{name}.log", "w"))
    run("backend", f"nginx -c {work}/backend.conf", OTHER_CPU)
    run("nginx", f"nginx -c {work}/nginx.conf", PROXY_CPU)
    run("haproxy", f"haproxy -f {work}/haproxy.cfg", PROXY_CPU)
    run("switchyard", f"{ROOT}/target/release/switchyard --config {work}/sy.toml --log-level warn", PROXY_CPU)
    for name, port in PORTS.items():
        wait_port(port)
    time.sleep(0.3)
    if any(p.poll() is not None for p in procs.values()):
        sys.exit("a server exited at start; see its log in " + work)
    pids = {n: [p.pid] for n, p in procs.items()}
    pids["nginx"] = children(procs["nginx"].pid) or pids["nginx"]  # the worker
    return procs, pids


def wrk(port, args, duration, extra=""):
    out = sh(f"taskset -c {OTHER_CPU} wrk -t1 {args} -d{duration}s --latency {extra} http://127.0.0.1:{port}/").stdout
    def find(pat, conv=float, default=None):
        m = re.search(pat, out, re.M)
        return conv(m.group(1)) if m else default
    def lat(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    errors = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout)[: ]+(\d+)", out))
    return {
        "requests": find(r"(\d+) requests in", int, 0),
        "rps": find(r"Requests/sec:\s+([\d.]+)"),
        "p50": lat("50"), "p99": lat("99"),
        "p999": (find(r"P999 (\d+)", int) or 0) / 1000.0 or None,
        "mbps": find(r"Transfer/sec:\s+([\d.]+)MB"),
        "errors": errors,
    }


def measure(name, pids, fn):
    t0 = ticks(pids[name])
    r = fn()
    used = (ticks(pids[name]) - t0) / HZ
    r["cpu_us"] = used / r["requests"] * 1e6 if r.get("requests") else None
    return r


def h2load(port, duration):
    """HTTP/2 downstream: 16 connections, 8 streams each, for `duration` seconds."""
    out = sh(f"taskset -c {OTHER_CPU} h2load -t1 -c16 -m8 -D {duration} http://127.0.0.1:{port}/").stdout
    def find(pat, conv=float):
        m = re.search(pat, out, re.M)
        return conv(m.group(1)) if m else None
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out, re.M)
    return {
        "requests": find(r"(\d+) succeeded", int) or 0,
        "rps": find(r"finished in [\d.]+s, ([\d.]+) req/s"),
        "mean": float(mean.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[mean.group(2)] if mean else None,
        "errors": (find(r"(\d+) failed", int) or 0) + (find(r"(\d+) errored", int) or 0),
    }


def slow_readers(port, pids, name, duration, n=16, per_tick=16384, tick=0.02):
    """n clients each ask for the 10 MiB file and read it slowly (per_tick bytes every
    tick: 0.8 MB/s each with the defaults) through a small receive buffer, for `duration`
    seconds. Returns the proxy's peak RSS growth in MiB (VmRSS sampled every tick) and
    the MB/s delivered to all readers together."""
    base = status_kib(pids[name], "VmRSS")
    peak = base
    socks = []
    got = 0
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            s.setblocking(False)
        end = time.time() + duration
        while time.time() < end:
            for s in socks:
                try:
                    got += len(s.recv(per_tick))
                except BlockingIOError:
                    pass
            peak = max(peak, status_kib(pids[name], "VmRSS"))
            time.sleep(tick)
    finally:
        for s in socks:
            s.close()
    return (peak - base) / 1024, got / duration / 1e6


def idle_rss(port, pids, name, n):
    """Open n keep-alive connections one after another, each making one request and
    reading its answer, then hold them all idle and read the proxy's RSS."""
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(10)
        s.sendall(req)
        got = b""
        while len(got) < 1100:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        socks.append(s)
    time.sleep(0.5)
    rss = status_kib(pids[name], "VmRSS")
    for s in socks:
        s.close()
    return rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rate", type=int, default=5000, help="fixed-rate scenario, requests/s")
    ap.add_argument("--idle", type=int, default=10000, help="idle keep-alive connections")
    ap.add_argument("--bare", action="store_true", help="nginx and HAProxy without the forwarded/request-id headers switchyard sets")
    a = ap.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "h2load", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install -y nginx-light haproxy wrk nghttp2-client util-linux")
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # Each proxy needs a descriptor per idle connection. HAProxy reserves two per
    # connection up front and refuses to start when maxconn does not fit, so it may get fewer.
    idle = {n: min(a.idle, want - 2000) for n in ("nginx", "haproxy", "switchyard")}
    idle["haproxy"] = min(a.idle, (want - 2000) // 2)
    for n, k in idle.items():
        if k < a.idle:
            print(f"open-file limit {want}: {n} gets {k} idle connections, not {a.idle}", flush=True)
    sh(f"cd {ROOT} && cargo build --release -q")
    work = tempfile.mkdtemp(prefix="switchyard-bench-")
    setup(work, idle['haproxy'] + 500, a.bare)
    results = {}
    procs, pids = {}, {}
    def add(scn, name, metric, v):
        if v is not None:
            results.setdefault((scn, metric), {}).setdefault(name, []).append(v)
    try:
        procs, pids = start(work, procs)
        d = a.duration
        r = wrk(PORTS["backend"], "-c64", d)
        print(f"backend direct: {r['rps']:.0f} req/s, p50 {r['p50']} ms, p99 {r['p99']} ms", flush=True)
        conns_per_rate = 64
        delay_ms = conns_per_rate * 1000.0 / a.rate
        open(f"{work}/rate.lua", "w").write(f"""
function delay() return {delay_ms:.3f} end
done = function(summary, latency, requests)
  io.write(string.format("P999 %d\\n", latency:percentile(99.9)))
end
""")
        for rnd in range(a.rounds):
            for name in ("nginx", "haproxy", "switchyard"):
                port = PORTS[name]
                r = measure(name, pids, lambda: wrk(port, "-c64", d, f"-s {work}/p999.lua"))
                for m in ("rps", "p50", "p99", "cpu_us", "errors"):
                    add("keep-alive, 64 conns", name, m, r[m])
                r = measure(name, pids, lambda: wrk(port, f"-c{conns_per_rate}", d, f"-s {work}/rate.lua"))
                for m in ("rps", "p50", "p99", "p999", "cpu_us", "errors"):
                    add(f"fixed ~{a.rate} req/s", name, m, r[m])
                r = measure(name, pids, lambda: wrk(port, "-c16", d, "-H 'Connection: close'"))
                for m in ("rps", "p50", "p99", "cpu_us", "errors"):
                    add("new connection per request", name, m, r[m])
                before = status_kib(pids[name], "VmHWM")
                out = sh(f"taskset -c {OTHER_CPU} wrk -t1 -c4 -d{d}s http://127.0.0.1:{port}/big").stdout
                mb = re.search(r"Transfer/sec:\s+([\d.]+)(MB|GB)", out)
                if mb:
                    add("10 MiB responses, 4 conns", name, "MB/s", float(mb.group(1)) * (1024 if mb.group(2) == "GB" else 1))
                add("10 MiB responses, 4 conns", name, "peak RSS growth MiB", (status_kib(pids[name], "VmHWM") - before) / 1024)
                growth, rate = slow_readers(port, pids, name, d)
                add("10 MiB responses, 16 slow readers", name, "peak RSS growth MiB", growth)
                add("10 MiB responses, 16 slow readers", name, "MB/s delivered", rate)
                r = measure(name, pids, lambda: h2load(H2_PORTS[name], d))
                for m in ("rps", "mean", "cpu_us", "errors"):
                    add("HTTP/2 (h2c), 16 conns x 8 streams", name, m, r[m])
            print(f"round {rnd + 1} done", flush=True)
        for name in ("nginx", "haproxy", "switchyard"):
            base = status_kib(pids[name], "VmRSS")
            add("memory", name, "idle RSS MiB", base / 1024)
            held = idle_rss(PORTS[name], pids, name, idle[name])
            add("memory", name, "RSS with idle keep-alive conns MiB", held / 1024)
            add("memory", name, "KiB per idle keep-alive conn", (held - base) / idle[name])
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if sys.exc_info()[0] is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nmachine: {os.cpu_count()} cores, {os.uname().release}; proxies pinned to core {PROXY_CPU} with 1 worker each; backend (nginx, 2 workers) and wrk on core {OTHER_CPU}")
    print(f"versions: {sh('nginx -v 2>&1').stdout.strip() or sh('nginx -v').stderr.strip()}; {sh('haproxy -v').stdout.splitlines()[0]}; switchyard {sh(ROOT + '/target/release/switchyard --version').stdout.split()[-1]}")
    print("idle keep-alive connections: " + ", ".join(f"{n} {k}" for n, k in idle.items()))
    print(f"rounds {a.rounds}, {a.duration}s each; median (min-max); ratio = switchyard / nginx\n")
    print(f"| scenario | metric | nginx | haproxy | switchyard | ratio |\n|---|---|---|---|---|---|")
    for (scn, metric), per in results.items():
        def cell(n):
            v = per.get(n)
            if not v:
                return "-"
            return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else f"{v[0]:.1f}"
        ratio = "-"
        if per.get("nginx") and per.get("switchyard") and statistics.median(per["nginx"]):
            ratio = f"{statistics.median(per['switchyard']) / statistics.median(per['nginx']):.2f}"
        print(f"| {scn} | {metric} | {cell('nginx')} | {cell('haproxy')} | {cell('switchyard')} | {ratio} |")


if __name__ == "__main__":
    main()
