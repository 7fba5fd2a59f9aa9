#!/usr/bin/env python3
"""The seed's story through the config `switchyard frappe-bench` generates, with and
without `--no-classes`, against real gunicorn.

The test bench (tests/fixtures/frappe-bench, gunicorn_workers 4, allow_rate_limiting
turned off: its `limit_conn $host 8` would refuse the ninth client) is turned into a
config whose web pool is a real gunicorn with the same number of sync workers. A
"Stock Balance" report takes 1.5 s, a transactional POST 20 ms, Frappe's ping 1 ms.
2N clients loop over report calls in every form the report split matches (GET
/api/method/…, a `cmd` in the query, a form, a multipart and a JSON body) while a
transactional POST is sent 10 times a second, for `--duration` s.

Printed: transactional p50, p99, max and failures (a client gives up after 10 s, like
a browser's "Request Timed Out"), reports completed, and the 503s the health check
caused (none: busy is not dead).

    python3 benches/load/frappe_flood.py [--duration 20] [--bin target/release/switchyard]

Needs gunicorn (pip install gunicorn). Everything binds 127.0.0.1; every phase is
bounded in time.
"""
import asyncio, json, os, re, shutil, subprocess, tempfile, time

from run import ROOT, bench_args, stop_all, wait_port  # the side-by-side suite's, beside this file

APP, CLASSED, BARE = 19391, 19392, 19393
GIVE_UP = 10.0
M = "frappe.desk.query_report.run"

WSGI = '''
import time
def application(environ, start_response):
    path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
    body = b""
    if environ.get("CONTENT_LENGTH"):
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    if path == "/api/method/ping":
        out = b'{"message":"pong"}'
        time.sleep(0.001)
    else:
        out = b"{}"
        time.sleep(1.5 if b"query_report" in (path + query).encode() + body else 0.02)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
'''


def report(i):
    """A report call in the i-th of the five forms: (method, target, content type, body)."""
    form = i % 5
    if form == 0:
        return "GET", f"/api/method/{M}?report_name=Stock%20Balance", None, b""
    if form == 1:
        return "GET", f"/?cmd={M}&report_name=Stock%20Balance", None, b""
    if form == 2:
        return "POST", "/", "application/x-www-form-urlencoded", f"cmd={M}&report_name=Stock+Balance".encode()
    if form == 3:
        body = f'--XyZ\r\nContent-Disposition: form-data; name="cmd"\r\n\r\n{M}\r\n--XyZ--\r\n'.encode()
        return "POST", "/", "multipart/form-data; boundary=XyZ", body
    return "POST", "/", "application/json", json.dumps({"cmd": M, "report_name": "Stock Balance"}).encode()


def generate(binary, tmp, port, extra):
    """The generated config for the bench copy in `tmp`, on loopback `port`."""
    bench = os.path.join(tmp, "bench")
    out = subprocess.run([binary, "frappe-bench", bench, "--web", f"127.0.0.1:{APP}", *extra],
                         capture_output=True, text=True, check=True)
    text = out.stdout.replace('"0.0.0.0:80"', f'"127.0.0.1:{port}"')
    text = re.sub(r'\[\[listeners\]\][^\n]*\nname = "http6"\naddr = "\[::\]:80"\n.*?\n\n', "", text, flags=re.S)
    conf = os.path.join(tmp, f"sy-{port}.toml")
    open(conf, "w").write(text + '\n[log]\naccess_log = "off"\n[admin]\nenabled = false\n[reload]\nwatch = false\n')
    summary = [l for l in out.stderr.splitlines() if l.startswith("classes:")]
    return conf, summary[0] if summary else ""


async def request(port, method, target, ctype=None, body=b""):
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), GIVE_UP)
        ct = f"Content-Type: {ctype}\r\n" if ctype else ""
        w.write(f"{method} {target} HTTP/1.1\r\nHost: erp.test\r\nConnection: close\r\n{ct}"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await w.drain()
        head = await asyncio.wait_for(r.read(), GIVE_UP - (time.monotonic() - t))
        w.close()
        return head[9:12].decode(errors="replace"), time.monotonic() - t
    except (asyncio.TimeoutError, ConnectionError, OSError):
        return "timeout", time.monotonic() - t


async def storm(port, seconds, clients):
    until = time.monotonic() + seconds
    done = {"reports": 0}

    async def reporter(c):
        i = c
        while time.monotonic() < until:
            status, _ = await request(port, *report(i))
            done["reports"] += status == "200"
            i += 1

    flood = [asyncio.create_task(reporter(c)) for c in range(clients)]
    await asyncio.sleep(0.5 if clients else 0)
    tx = []
    while time.monotonic() < until:
        tx.append(asyncio.create_task(request(port, "POST", "/api/resource/Sales%20Order", "application/json", b"{}")))
        await asyncio.sleep(0.1)
    results = await asyncio.gather(*tx)
    await asyncio.gather(*flood)
    lat = sorted(t for s, t in results if s == "200")
    failed = [s for s, _ in results if s != "200"]
    pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3 if lat else float("nan")
    return pick(0.5), pick(0.99), (lat[-1] * 1e3 if lat else float("nan")), failed, len(results), done["reports"]


def main():
    a = bench_args(20, ("gunicorn",), "pip install gunicorn")
    tmp = tempfile.mkdtemp(prefix="switchyard-frappe-flood-")
    shutil.copytree(os.path.join(ROOT, "tests/fixtures/frappe-bench"), os.path.join(tmp, "bench"), symlinks=True)
    common = os.path.join(tmp, "bench/sites/common_site_config.json")
    c = json.load(open(common))
    c.pop("allow_rate_limiting", None)
    json.dump(c, open(common, "w"))
    workers = c.get("gunicorn_workers", 4)
    open(os.path.join(tmp, "app.py"), "w").write(WSGI)
    procs = [subprocess.Popen(["gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{APP}", "--chdir", tmp,
                               "--backlog", "2048", "-t", "120", "app:application"], stderr=subprocess.DEVNULL)]
    try:
        wait_port(APP)
        runs = []
        for port, extra in ((CLASSED, []), (BARE, ["--no-classes"])):
            conf, summary = generate(a.bin, tmp, port, extra)
            procs.append(subprocess.Popen([a.bin, "--config", conf, "--log-level", "error"]))
            wait_port(port)
            runs.append((port, " ".join(extra) or "default", summary))
        base = asyncio.run(storm(CLASSED, 3, 0))
        print(f"gunicorn -w {workers} (gunicorn_workers of the bench); report 1.5 s in 5 forms, transaction 20 ms; "
              f"{2 * workers} report clients, 10 transactions/s, {a.duration} s; unloaded transaction p99 {base[1]:.0f} ms\n")
        print("| generated config | tx p50 ms | tx p99 ms | tx max ms | tx failed | reports done |")
        print("|---|---|---|---|---|---|")
        for port, name, summary in runs:
            p50, p99, mx, failed, sent, reports = asyncio.run(storm(port, a.duration, 2 * workers))
            why = f" ({', '.join(sorted(set(failed)))})" if failed else ""
            print(f"| {name} | {p50:.0f} | {p99:.0f} | {mx:.0f} | {len(failed)} of {sent}{why} | {reports} |", flush=True)
            time.sleep(2)  # the last reports drain from gunicorn
        for _, name, summary in runs:
            print(f"\n{name}: {summary}")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
