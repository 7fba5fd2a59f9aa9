#!/usr/bin/env python3
"""The seed's story, reproduced: reports must never starve transactions.

One app server, real gunicorn with N sync workers (one request per worker at a time,
as bench runs Frappe): a "Stock Balance" report takes 1.5 s, a transactional POST
20 ms. A closed-loop flood of report requests from 2N clients, and an open-loop
stream of transactional POSTs (10 per second), for `--duration` s, through:

1. switchyard without classes (what every proxy does by default);
2. switchyard with `class = "report"` capped at N-1 per server, priority -10;
3. HAProxy with `maxconn N` on the server and `set-priority-class` for reports
   (the closest mainstream configuration), as the reference.

Printed: transactional p50, p99, max and failures (a client gives up after 10 s,
like a browser's "Request Timed Out"), and reports completed.

    python3 benches/load/classes.py [--duration 20] [--workers 4] [--bin target/release/switchyard]

Needs gunicorn (pip install gunicorn) and haproxy (apt-get install -y haproxy).
Everything binds 127.0.0.1 and every phase is bounded in time.
"""
import asyncio, os, shutil, subprocess, tempfile, time

from run import bench_args, start_switchyard_with, stop_all, wait_port  # the side-by-side suite's, beside this file

APP, BARE, CLASSED, HAPROXY = 19381, 19382, 19383, 19384
REPORT = "/api/method/frappe.desk.query_report.run?report_name=Stock%20Balance"
GIVE_UP = 10.0

WSGI = '''
import time
def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if environ.get("CONTENT_LENGTH"):
        environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    time.sleep(1.5 if "query_report" in path else 0.02)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]
'''


def switchyard_conf(tmp, binary, port, workers, classes):
    limits = ""
    if classes:
        limits = (f"max_connections = {workers}\nqueue_size = 1000\nqueue_timeout = \"30s\"\n"
                  f"[pools.app.classes.report]\nmax_connections = {workers - 1}\npriority = -10\n")
    return start_switchyard_with(tmp, binary, port, f"""
[pools.app]
servers = ["127.0.0.1:{APP}"]
read_timeout = "60s"
{limits}
[[routes]]
name = "reports"
pool = "app"
class = "report"
match.path_prefix = "/api/method/frappe.desk.query_report.run"
[[routes]]
name = "default"
pool = "app"
""", name=f"sy-{port}")


def haproxy(tmp, workers):
    conf = os.path.join(tmp, "haproxy.cfg")
    open(conf, "w").write(f"""
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout queue 30s
frontend f
  bind 127.0.0.1:{HAPROXY}
  acl report path_beg /api/method/frappe.desk.query_report.run
  http-request set-priority-class int(10) if report
  default_backend app
backend app
  server s1 127.0.0.1:{APP} maxconn {workers}
""")
    return subprocess.Popen(["haproxy", "-f", conf, "-db"], stderr=subprocess.DEVNULL)


async def request(port, method, target, body=b""):
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), GIVE_UP)
        w.write(f"{method} {target} HTTP/1.1\r\nHost: erp\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await w.drain()
        head = await asyncio.wait_for(r.read(), GIVE_UP - (time.monotonic() - t))
        w.close()
        return head.startswith(b"HTTP/1.1 200"), time.monotonic() - t
    except (asyncio.TimeoutError, ConnectionError, OSError):
        return False, time.monotonic() - t


async def storm(port, seconds, reports_clients):
    until = time.monotonic() + seconds
    done = {"reports": 0}

    async def reporter():
        while time.monotonic() < until:
            ok, _ = await request(port, "GET", REPORT)
            done["reports"] += ok

    flood = [asyncio.create_task(reporter()) for _ in range(reports_clients)]
    await asyncio.sleep(0.5 if reports_clients else 0)
    tx = []
    while time.monotonic() < until:
        tx.append(asyncio.create_task(request(port, "POST", "/api/resource/Sales%20Order", b"{}")))
        await asyncio.sleep(0.1)
    results = await asyncio.gather(*tx)
    await asyncio.gather(*flood)
    lat = sorted(t for ok, t in results if ok)
    failed = sum(1 for ok, _ in results if not ok)
    pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3 if lat else float("nan")
    return pick(0.5), pick(0.99), (lat[-1] * 1e3 if lat else float("nan")), failed, len(results), done["reports"]


def main():
    a = bench_args(20, ("gunicorn", "haproxy"), "pip install gunicorn; apt-get install -y haproxy",
                   [("--workers", 4)])
    tmp = tempfile.mkdtemp(prefix="switchyard-classes-")
    open(os.path.join(tmp, "app.py"), "w").write(WSGI)
    procs = [subprocess.Popen(["gunicorn", "-w", str(a.workers), "-b", f"127.0.0.1:{APP}",
                               "--chdir", tmp, "--backlog", "2048", "-t", "120", "app:application"],
                              stderr=subprocess.DEVNULL)]
    try:
        wait_port(APP)
        procs.append(switchyard_conf(tmp, a.bin, BARE, a.workers, False))
        procs.append(switchyard_conf(tmp, a.bin, CLASSED, a.workers, True))
        procs.append(haproxy(tmp, a.workers))
        for p in (BARE, CLASSED, HAPROXY):
            wait_port(p)
        base = asyncio.run(storm(CLASSED, 3, 0))
        print(f"gunicorn -w {a.workers}; report 1.5 s, transaction 20 ms; {2 * a.workers} report "
              f"clients, 10 transactions/s, {a.duration} s; unloaded transaction p99 {base[1]:.0f} ms\n")
        print("| proxy | tx p50 ms | tx p99 ms | tx max ms | tx failed | reports done |")
        print("|---|---|---|---|---|---|")
        for name, port in (("switchyard, no classes", BARE),
                           (f"switchyard, report capped at {a.workers - 1}", CLASSED),
                           (f"HAProxy maxconn {a.workers} + priority class", HAPROXY)):
            p50, p99, mx, failed, sent, reports = asyncio.run(storm(port, a.duration, 2 * a.workers))
            print(f"| {name} | {p50:.0f} | {p99:.0f} | {mx:.0f} | {failed} of {sent} | {reports} |", flush=True)
            time.sleep(2)  # the last reports drain from gunicorn
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
