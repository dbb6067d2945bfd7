"""Runs the end-to-end benchmark; called by bench/run.sh.

Targets, all on loopback, in front of one nginx upstream that answers 200:
  direct    the upstream itself
  nginx     nginx as a plain reverse proxy with upstream keepalive (the ceiling)
  memory    sessiongate, memory store
  embedded  sessiongate, embedded store
  redis     sessiongate, Redis store
and, when named in --targets, the stores that live in another server:
  postgres, mysql  the machine's PostgreSQL and MariaDB services (127.0.0.1,
                   database test), each on a table of the run's own
  memcached        a memcached of the run's own on CPU 1
  cached-pg, cached-redis  kind: cached over PostgreSQL and over Redis
Workloads: anon (no cookie), read (a valid cookie; the session forwarded as an
HS256 header), write (every response carries an X-Session-Update), and, when
asked for (--workloads), login (every response sets the session's user_id,
the write that indexes a session under its subject).

--subjects adds the targets STORE-subject: the same build and store with
session.subject_key set, to measure what the index of subjects costs.

Pinning on this 2-core machine: the proxy under test (nginx worker or
sessiongate with one runtime thread) on CPU 0; wrk, the upstream nginx and
redis-server on CPU 1. Each proxy gets the same single core.

Reported per workload and target: requests/s, p50 and p99 latency, the
proxy's CPU time per request (process CPU seconds / requests served) and its
peak RSS, as medians over the rounds, and ratios to nginx as medians over the
rounds of each round's ratio.
"""

import argparse
import resource
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SECRET = "bench-secret-0123456789abcdef-0123456789"
JWT_SECRET = "bench-upstream-jwt-0123456789abcdef-0123"
TARGETS = ["direct", "nginx", "memory", "embedded", "redis"]
EXTRA_TARGETS = ["postgres", "mysql", "memcached", "cached-pg", "cached-redis"]
WORKLOADS = ["anon", "read", "write"]
# Run only when named in --workloads. handshake: a new connection per
# request (with --tls, a full TLS 1.3 handshake each). h2read: session
# reads over HTTP/2 (with --tls), h2load with 10 streams per connection.
EXTRA_WORKLOADS = ["login", "handshake", "h2read"]
# --tls: every proxy (nginx and sessiongate) serves HTTPS with the same
# certificate; the upstream stays plain HTTP.
SCHEME = "http"
TLS = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid):
    """(user, system) CPU seconds of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def status_mib(pid, field):
    """A memory figure of /proc/PID/status (VmHWM, VmRSS) in MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid):
    return status_mib(pid, "VmHWM")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, cpu, env=None):
        p = subprocess.Popen(["taskset", "-c", str(cpu)] + args, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


# Connections each server may hold: room for the clients wrk opens, raised
# with --connections.
SLOTS = 4096
# nginx counts a proxied request's upstream connection against the same
# worker_connections as its client's: twice the slots, within the file limit
# (set in main). With one limit for both, nginx at 10,000 clients ran out of
# connections and served 5,000 req/s, a bench's misconfiguration, not nginx.
NGINX_CONNECTIONS = 2 * SLOTS


def nginx_conf(work, name, port, body):
    path = os.path.join(work, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""
worker_processes 1;
worker_rlimit_nofile {NGINX_CONNECTIONS + 64};
daemon off;
master_process on;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections {NGINX_CONNECTIONS}; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  fastcgi_temp_path {work}/{name}-fcgi;
  uwsgi_temp_path {work}/{name}-uwsgi;
  scgi_temp_path {work}/{name}-scgi;
  keepalive_requests 1000000;
  {body}
}}
""")
    return path


def make_certificate(work):
    """A self-signed P-256 certificate for 127.0.0.1: (cert, key) paths."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def sessiongate_conf(work, name, port, upstream, store, subject_key=False):
    path = os.path.join(work, f"{name}.yaml")
    tls = f", tls: {{cert: {TLS[0]}, key: {TLS[1]}}}" if TLS else ""
    with open(path, "w") as f:
        f.write(f"""
listen: [{{addr: "127.0.0.1:{port}"{tls}}}]
admin: {{addr: "127.0.0.1:{free_port()}"}}
secrets: ["{SECRET}"]
log: {{format: json}}
session:
  cookie: {{secure: false}}
  store: {store}{chr(10) + "  subject_key: user_id" if subject_key else ""}
upstreams:
  app: {{url: "http://127.0.0.1:{upstream}"}}
routes:
  - match: {{path_prefix: /}}
    upstream: app
    forward: {{mode: signed, secret: "{JWT_SECRET}"}}
limits: {{max_connections: {SLOTS}}}
""")
    return path


def login_cookie(port):
    import ssl
    req = urllib.request.Request(f"{SCHEME}://127.0.0.1:{port}/login")
    context = ssl._create_unverified_context() if TLS else None
    with urllib.request.urlopen(req, context=context) as resp:
        for k, v in resp.getheaders():
            if k.lower() == "set-cookie" and v.startswith("sessionid="):
                return v.split(";")[0]
    return None


def wrk_args(port, path, cookie, duration, connections, close=False):
    args = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
            f"{SCHEME}://127.0.0.1:{port}{path}"]
    if cookie:
        args[6:6] = ["-H", f"Cookie: {cookie}"]
    if close:
        args[6:6] = ["-H", "Connection: close"]
    return args


def wrk(port, path, cookie, duration, connections, close=False):
    args = wrk_args(port, path, cookie, duration, connections, close)
    return parse_wrk(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def h2load(port, path, cookie, duration, connections):
    """HTTP/2 over TLS with h2load: requests/s; h2load reports no
    percentiles, so the latency fields hold its mean."""
    args = ["taskset", "-c", "1", "h2load", "-t", "1", "-c", str(connections), "-m", "10",
            "-D", str(duration), f"{SCHEME}://127.0.0.1:{port}{path}"]
    if cookie:
        args[4:4] = ["-H", f"cookie: {cookie}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    mean_ms = float(mean.group(1)) * unit[mean.group(2)] if mean else float("nan")
    requests = int(done.group(1))
    return {
        "rps": float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1)),
        "p50_ms": mean_ms,
        "p99_ms": mean_ms,
        "requests": requests,
        "errors": requests - int(status.group(1)) if status else requests,
    }


def parse_wrk(out):
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * unit[m.group(2)]

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "requests": requests,
        "errors": int(errors.group(1)) if errors else 0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--smoke", action="store_true", help="a short run that checks the harness, not the figures")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help="comma-separated subset to run (nginx is always run: it is the baseline)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset to run")
    ap.add_argument("--subjects", action="store_true",
                    help="add STORE-subject targets: each chosen store with session.subject_key set")
    ap.add_argument("--tls", action="store_true",
                    help="the proxies serve HTTPS (TLS 1.3, one certificate, nginx with ssl_session_cache)")
    ap.add_argument("--compare", metavar="BINARY",
                    help="another build, run beside this one on each chosen store as target STORE-base")
    a = ap.parse_args()
    global SLOTS, NGINX_CONNECTIONS
    SLOTS = max(SLOTS, a.connections + 512)
    # wrk and each proxy hold a descriptor per connection, the proxies one
    # more per upstream connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * SLOTS + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    NGINX_CONNECTIONS = min(2 * SLOTS, want - 64)
    if want < SLOTS:
        sys.exit(f"the file limit ({hard}) is below the {SLOTS} descriptors {a.connections} connections need")
    targets = [t for t in TARGETS + EXTRA_TARGETS if t in a.targets.split(",") or t == "nginx"]
    compared = [f"{t}-base" for t in targets if a.compare and t in ("memory", "embedded", "redis", "cached-redis")]
    compared += [f"{t}-subject" for t in targets if a.subjects and t in ("memory", "embedded", "redis")]
    workloads = [w for w in WORKLOADS + EXTRA_WORKLOADS if w in a.workloads.split(",")]
    partial = targets != TARGETS or workloads != WORKLOADS or bool(compared)
    targets = targets + compared
    all_targets = TARGETS + EXTRA_TARGETS + compared

    work = tempfile.mkdtemp(prefix="sessiongate-bench-")
    procs = Procs()
    tables = []  # (database, table) made by this run, dropped at the end
    global SCHEME, TLS
    if a.tls:
        SCHEME, TLS = "https", make_certificate(work)
        partial = True
        targets = [t for t in targets if t != "direct"]
    try:
        upstream = free_port()
        up_conf = nginx_conf(work, "upstream", upstream, f"""
  server {{
    listen 127.0.0.1:{upstream} reuseport backlog=4096;
    location /login {{ add_header X-Session-Update '{{"user_id":42,"name":"bench","roles":["user"]}}'; return 200 "ok\\n"; }}
    location /write {{ add_header X-Session-Update '{{"n":1}}'; return 200 "ok\\n"; }}
    location / {{ return 200 "ok\\n"; }}
  }}""")
        procs.start(["nginx", "-c", up_conf, "-p", work], cpu=1)
        ports = {"direct": upstream}

        ports["nginx"] = free_port()
        px_conf = nginx_conf(work, "proxy", ports["nginx"], f"""
  upstream app {{ server 127.0.0.1:{upstream}; keepalive {SLOTS}; }}
  server {{
    listen 127.0.0.1:{ports['nginx']}{' ssl http2' if TLS else ''} backlog=4096;
    {f'ssl_certificate {TLS[0]}; ssl_certificate_key {TLS[1]}; ssl_protocols TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_timeout 1h;' if TLS else ''}
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}""")
        nginx_proxy = procs.start(["nginx", "-c", px_conf, "-p", work], cpu=0)

        redis_port = free_port()
        procs.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", work], cpu=1)
        env = dict(os.environ, TOKIO_WORKER_THREADS="1", RUST_LOG="warn")
        stores = {
            "memory": "{kind: memory}",
            "embedded": f"{{kind: embedded, path: {work}/sessions.db}}",
            "redis": f"{{kind: redis, url: \"redis://127.0.0.1:{redis_port}\"}}",
        }
        if {"postgres", "cached-pg"} & set(targets):
            tables.append(("postgres", f"bench_pg_{os.getpid()}"))
            tables.append(("postgres", f"bench_cached_{os.getpid()}"))
            pg_url = "postgres://postgres@127.0.0.1:5432/test"
            stores["postgres"] = f"{{kind: postgres, url: \"{pg_url}\", table: {tables[-2][1]}}}"
            stores["cached-pg"] = (f"{{kind: cached, durable: {{kind: postgres, url: \"{pg_url}\","
                                   f" table: {tables[-1][1]}}}}}")
        if "mysql" in targets:
            tables.append(("mysql", f"bench_my_{os.getpid()}"))
            stores["mysql"] = f"{{kind: mysql, url: \"mysql://root@127.0.0.1:3306/test\", table: {tables[-1][1]}}}"
        if "memcached" in targets:
            mc_port = free_port()
            procs.start(["memcached", "-p", str(mc_port), "-l", "127.0.0.1", "-U", "0", "-m", "256",
                         "-t", "1", "-u", "root"], cpu=1)
            stores["memcached"] = f"{{kind: memcached, servers: [\"127.0.0.1:{mc_port}\"]}}"
        if "cached-redis" in targets:
            stores["cached-redis"] = (f"{{kind: cached, durable: {{kind: redis,"
                                      f" url: \"redis://127.0.0.1:{redis_port}\", key_prefix: \"bc:\"}}}}")
        stores = {k: v for k, v in stores.items() if k in targets or k in TARGETS}
        for name in compared:
            base, _, kind = name.rpartition("-")
            stores[name] = stores[base].replace("sessions.db", f"sessions-{kind}.db")
        pids = {}
        for name, store in stores.items():
            ports[name] = free_port()
            conf = sessiongate_conf(work, name, ports[name], upstream, store,
                                    subject_key=name.endswith("-subject"))
            binary = a.compare if name.endswith("-base") else a.binary
            pids[name] = procs.start([binary, "--config", conf], cpu=0, env=env).pid
        if TLS:
            del ports["direct"]
        for port in ports.values():
            wait_port(port)
        time.sleep(0.3)
        workers = subprocess.run(["pgrep", "-P", str(nginx_proxy.pid)], capture_output=True, text=True).stdout.split()
        pids["nginx"] = int(workers[0])

        cookies = {t: login_cookie(ports[t]) if t in stores else None for t in all_targets}
        for t in stores:
            assert cookies[t], f"no session cookie from {t}"

        results = {(w, t): [] for w in WORKLOADS + EXTRA_WORKLOADS for t in all_targets}
        for r in range(a.rounds):
            for w in workloads:
                path = {"write": "/write", "login": "/login"}.get(w, "/")
                order = targets if r % 2 == 0 else list(reversed(targets))
                for t in order:
                    cookie = cookies[t] if w != "anon" else None
                    pid = pids.get(t)
                    before = cpu_seconds(pid) if pid else None
                    if w == "h2read":
                        res = h2load(ports[t], path, cookies[t], a.duration, a.connections)
                    else:
                        res = wrk(ports[t], path, cookie, a.duration, a.connections,
                                  close=w == "handshake")
                    if pid:
                        after, n = cpu_seconds(pid), max(res["requests"], 1)
                        res["user_us"] = (after[0] - before[0]) / n * 1e6
                        res["sys_us"] = (after[1] - before[1]) / n * 1e6
                        res["cpu_us"] = res["user_us"] + res["sys_us"]
                    results[(w, t)].append(res)
                    print(f"round {r + 1} {w:<5} {t:<13} {res['rps']:>9.0f} req/s  p50 {res['p50_ms']:.2f} ms"
                          f"  p99 {res['p99_ms']:.2f} ms  errors {res['errors']}", flush=True)
        rss = {t: peak_rss_mib(pids[t]) for t in pids}
        if partial:
            report_partial(results, targets, workloads, rss)
        else:
            report(results, rss, a, work)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)
        for db, table in tables:
            cli = (["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"] if db == "postgres"
                   else ["mysql", "-h", "127.0.0.1", "-uroot", "test", "-e"])
            subprocess.run(cli + [f"DROP TABLE IF EXISTS {table}"], capture_output=True)
            if db == "postgres":
                subprocess.run(cli + [f"DROP FUNCTION IF EXISTS {table}_notify()"], capture_output=True)


def median(values):
    return statistics.median(values) if values else float("nan")


def paired_ratio(runs, baseline, key):
    """Median over rounds of each run's ratio to the baseline's run in the
    same round: a drift of the machine between rounds cancels out of each
    pair, where a ratio of medians can put a slow phase on one side only."""
    pairs = zip(runs, baseline)
    return median([r[key] / b[key] for r, b in pairs if key in r and key in b])


def report_partial(results, targets, workloads, rss):
    """A focused run (--targets/--workloads): medians, ratios and peak RSS, nothing written."""
    for w in workloads:
        base = results[(w, "nginx")]
        base_rps = median([r["rps"] for r in base])
        base_cpu = median([r["cpu_us"] for r in base])
        for t in targets:
            rs = results[(w, t)]
            rps = median([r["rps"] for r in rs])
            cpu = median([r["cpu_us"] for r in rs if "cpu_us" in r])
            p99 = median([r["p99_ms"] for r in rs])
            ratio = paired_ratio(rs, base, "rps")
            print(f"{w:<5} {t:<13} {rps:>9.0f} req/s {ratio:5.2f}x  p99 {p99:.2f} ms"
                  f"  CPU {cpu:5.1f} us/req {cpu / base_cpu if cpu == cpu else float('nan'):5.2f}x"
                  f" (user {median([r['user_us'] for r in rs if 'user_us' in r]):.1f},"
                  f" system {median([r['sys_us'] for r in rs if 'sys_us' in r]):.1f})")
    for t in targets:
        if t in rss:
            print(f"peak RSS {t:<13} {rss[t]:.1f} MiB")


def report(results, rss, a, work):
    def m(w, t, key):
        return median([r[key] for r in results[(w, t)] if key in r])

    def paired(w, t, key, base_w):
        return paired_ratio(results[(w, t)], results[(base_w, "nginx")], key)

    lines = []
    machine = f"{os.cpu_count()} cores, {subprocess.run(['uname', '-srm'], capture_output=True, text=True).stdout.strip()}"
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines.append(f"Machine: {cpu_model}, {machine}. wrk -t1 -c{a.connections}, {a.duration} s per run, "
                 f"median of {a.rounds} interleaved rounds; the proxy on CPU 0, wrk and the upstream on CPU 1.")
    lines.append("")
    lines.append("| workload | target | req/s | x nginx | p50 ms | p99 ms | p99 x nginx | CPU us/req | user | system | CPU x nginx | peak RSS MiB | non-2xx |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary = {}
    for w in WORKLOADS:
        for t in TARGETS:
            rps, p50, p99 = m(w, t, "rps"), m(w, t, "p50_ms"), m(w, t, "p99_ms")
            cpu = m(w, t, "cpu_us")
            errors = sum(r["errors"] for r in results[(w, t)])
            rps_x, p99_x = paired(w, t, "rps", w), paired(w, t, "p99_ms", w)
            cpu_x = paired(w, t, "cpu_us", "anon") if cpu == cpu else None
            summary[(w, t)] = {"rps": rps, "rps_x": rps_x, "p99_x": p99_x, "cpu_us": cpu, "cpu_x": cpu_x}
            cpu_cell = f"{cpu:.1f}" if cpu == cpu else "-"
            user, system = m(w, t, "user_us"), m(w, t, "sys_us")
            split = f"{user:.1f} | {system:.1f}" if cpu == cpu else "- | -"
            cpu_x_cell = f"{cpu_x:.2f}" if cpu == cpu else "-"
            rss_cell = f"{rss[t]:.1f}" if t in rss else "-"
            lines.append(f"| {w} | {t} | {rps:.0f} | {rps_x:.2f} | {p50:.2f} | {p99:.2f} | "
                         f"{p99_x:.2f} | {cpu_cell} | {split} | {cpu_x_cell} | {rss_cell} | {errors} |")
    lines.append("")
    lines.append("The x nginx columns are medians over rounds of each round's ratio to nginx in the same round "
                 "(the other columns, medians of the values). CPU x nginx compares with nginx's CPU per plain "
                 "proxied request (the anon row); user and system split the CPU time between the process and the "
                 "kernel working for it.")
    targets = [
        ("anonymous throughput, memory", summary[("anon", "memory")]["rps_x"], ">=", 1.0),
        ("session reads throughput, memory", summary[("read", "memory")]["rps_x"], ">=", 0.9),
        ("session reads throughput, redis", summary[("read", "redis")]["rps_x"], ">=", 0.6),
        ("session reads p99, memory", summary[("read", "memory")]["p99_x"], "<=", 1.5),
        ("CPU per session read, memory", summary[("read", "memory")]["cpu_x"], "<=", 1.3),
        ("peak RSS MiB, memory", rss.get("memory", 0), "<", 64),
    ]
    lines.append("")
    lines.append("| target | measured | goal | met |")
    lines.append("| --- | ---: | --- | --- |")
    for name, value, op, goal in targets:
        ok = value >= goal if op == ">=" else value <= goal if op == "<=" else value < goal
        lines.append(f"| {name} | {value:.2f} | {op} {goal} | {'yes' if ok else 'no'} |")
    text = "\n".join(lines)
    print("\n" + text)
    if a.smoke:
        return
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "latest.json"), "w") as f:
        json.dump({f"{w}/{t}": v for (w, t), v in results.items()}, f, indent=1)
    chart(summary, a.out, work, f"{cpu_model}, {os.cpu_count()} cores")


def chart(summary, out, work, machine):
    data = os.path.join(work, "chart.dat")
    with open(data, "w") as f:
        for t in TARGETS:
            f.write(t + " " + " ".join(f"{summary[(w, t)]['rps_x']:.3f}" for w in WORKLOADS) + "\n")
    png = os.path.join(out, "throughput.png")
    script = f"""
set terminal pngcairo size 900,480 font ",11"
set output "{png}"
set title "Throughput relative to nginx as a plain reverse proxy (higher is better)\\n{machine}, medians of interleaved rounds"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:*]
set grid ytics
set key top right
set xrange [-0.6:4.6]
set ylabel "requests/s ÷ nginx"
plot "{data}" using 2:xtic(1) title "anonymous", "" using 3 title "session read", "" using 4 title "session write"
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=False)


if __name__ == "__main__":
    sys.exit(main())
