#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: the same
total on a busy machine as on a quiet one, so two builds (or a build and
its baseline) compare without a clock.

Each target runs under `valgrind --tool=callgrind` in front of one nginx
upstream; for each workload a keep-alive client sends warm-up requests,
then the counters are zeroed, exactly `--requests` requests are sent, and
the count is dumped. nginx as a plain reverse
proxy runs under the same script, as the ceiling.

  anon   no cookie
  read   one session's cookie: the session is loaded and its token, signed
         once a second, kept and reused
  write  a session cookie, and the upstream answers with X-Session-Update
  read-many  the cookies of 1,000 sessions in turn: no session is read again
         before 999 others, so a read seldom finds its token kept from the last
         (the signer keeps 256); the cost of a session read once

--check FILE fails (exit 1) when a workload of sessiongate grows by more
than 5% over the baseline in FILE; --write FILE records one. A baseline
names its store (none named: the memory store), and is checked only
against a run on that store.
"""

import argparse
import glob
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import free_port, nginx_conf, wait_port, SECRET, JWT_SECRET  # noqa: E402

WORKLOADS = [("anon", "/", False), ("read", "/", True), ("write", "/write", True),
             ("read-many", "/", True)]
# More sessions than the signer keeps tokens for.
MANY_SESSIONS = 1000
TOLERANCE = 0.05


def sessiongate_conf(work, port, upstream, store="{kind: memory}"):
    path = os.path.join(work, "sessiongate.yaml")
    with open(path, "w") as f:
        f.write(f"""
listen: [{{addr: "127.0.0.1:{port}"}}]
admin: {{addr: "127.0.0.1:{free_port()}"}}
secrets: ["{SECRET}"]
log: {{format: json}}
session:
  cookie: {{secure: false}}
  store: {store}
upstreams:
  app: {{url: "http://127.0.0.1:{upstream}"}}
routes:
  - match: {{path_prefix: /}}
    upstream: app
    forward: {{mode: signed, secret: "{JWT_SECRET}"}}
""")
    return path


def requests(port, path, cookies, n):
    """n requests, each with the next of `cookies` (none when empty)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Host": "bench.local"}
    for i in range(n):
        if cookies:
            headers["Cookie"] = cookies[i % len(cookies)]
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"{path}: status {resp.status}")
    conn.close()


def login(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/login", headers={"Host": "bench.local"})
    resp = conn.getresponse()
    resp.read()
    for k, v in resp.getheaders():
        if k.lower() == "set-cookie" and v.startswith("sessionid="):
            return v.split(";")[0]
    raise SystemExit("no session cookie from /login")


def callgrind(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def totals(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def measure(name, argv, port, work, n, warm, with_cookie, env=None):
    out = os.path.join(work, f"callgrind.{name}")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *argv],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=120)
        time.sleep(0.5)
        # nginx runs with `master_process off`: the process counted serves.
        pid = proc.pid
        cookies = [login(port) for _ in range(MANY_SESSIONS if with_cookie else 0)]
        counts = {}
        for workload, path, needs_cookie in WORKLOADS:
            c = (cookies if workload == "read-many" else cookies[:1]) if needs_cookie else []
            requests(port, path, c, warm)
            # Zeroed, then dumped right after: what lies between is the
            # requests (an idle proxy waits in epoll and counts nothing).
            callgrind(pid, "-z")
            requests(port, path, c, n)
            before = set(glob.glob(f"{out}.{pid}*"))
            callgrind(pid, "-d")
            for _ in range(100):
                new = set(glob.glob(f"{out}.{pid}*")) - before
                if new:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            counts[workload] = totals(sorted(new)[-1]) / n
        return counts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warm", type=int, default=200)
    p.add_argument("--no-nginx", action="store_true", help="skip nginx's count")
    p.add_argument("--check", help="baseline file: fail when a workload grows by more than 5%%")
    p.add_argument("--write", help="record this run as the baseline in this file")
    p.add_argument("--json", help="write the counts here")
    p.add_argument("--store", choices=["memory", "embedded", "redis", "cached-redis"], default="memory",
                   help="the session store; redis and cached-redis (the local cache over Redis)"
                        " start a redis-server")
    a = p.parse_args()
    base = None
    if a.check:
        with open(a.check) as f:
            base = json.load(f)
        if base.pop("store", "memory") != a.store:
            p.error(f"{a.check} is a baseline of another store than {a.store}")
    work = tempfile.mkdtemp(prefix="sg-instr-")
    upstream = free_port()
    up_conf = nginx_conf(work, "upstream", upstream, f"""
  server {{
    listen 127.0.0.1:{upstream};
    location /login {{ add_header X-Session-Update '{{"user_id":42,"name":"bench","roles":["user"]}}'; return 200 "ok\\n"; }}
    location /write {{ add_header X-Session-Update '{{"n":1}}'; return 200 "ok\\n"; }}
    location / {{ return 200 "ok\\n"; }}
  }}""")
    up = subprocess.Popen(["nginx", "-c", up_conf, "-p", work], stderr=subprocess.DEVNULL)
    servers = [up]
    store = "{kind: memory}"
    if a.store == "embedded":
        store = f"{{kind: embedded, path: {work}/sessions.db}}"
    elif a.store in ("redis", "cached-redis"):
        redis_port = free_port()
        servers.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL))
        wait_port(redis_port)
        store = f"{{kind: redis, url: \"redis://127.0.0.1:{redis_port}\"}}"
        if a.store == "cached-redis":
            store = f"{{kind: cached, durable: {store}}}"
    results = {}
    try:
        wait_port(upstream)
        port = free_port()
        env = dict(os.environ, TOKIO_WORKER_THREADS="1", RUST_LOG="warn")
        results["sessiongate"] = measure(
            "sessiongate", [a.binary, "--config", sessiongate_conf(work, port, upstream, store)],
            port, work, a.requests, a.warm, True, env)
        if not a.no_nginx:
            port = free_port()
            conf = nginx_conf(work, "proxy", port, f"""
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}""")
            # One process, counted whole: no master forking a worker.
            with open(conf) as f:
                text = f.read().replace("master_process on;", "master_process off;")
            with open(conf, "w") as f:
                f.write(text)
            counts = measure("nginx", ["nginx", "-c", conf, "-p", work], port, work,
                             a.requests, a.warm, False)
            # nginx sets no session cookie: its read and write are plain proxied requests.
            results["nginx"] = counts
    finally:
        for server in servers:
            server.terminate()
            server.wait()

    sg = results["sessiongate"]
    print(f"instructions per request, {a.requests} requests per workload (callgrind)")
    print("| workload | sessiongate | nginx | x nginx |")
    print("| --- | ---: | ---: | ---: |")
    for w, _, _ in WORKLOADS:
        ng = results.get("nginx", {}).get(w)
        ratio = f"{sg[w] / ng:.2f}" if ng else "-"
        shown = f"{ng:,.0f}" if ng else "-"
        print(f"| {w} | {sg[w]:,.0f} | {shown} | {ratio} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    if a.write:
        with open(a.write, "w") as f:
            counts = {w: round(v) for w, v in sg.items()}
            json.dump(counts if a.store == "memory" else {"store": a.store, **counts}, f, indent=2)
            f.write("\n")
    if base is not None:
        failed = False
        for w, v in sg.items():
            grown = v / base[w] - 1
            verdict = "ok" if grown <= TOLERANCE else "GREW"
            print(f"{w}: {v:,.0f} against a baseline of {base[w]:,} ({grown:+.1%}) {verdict}")
            failed |= grown > TOLERANCE
        if failed:
            raise SystemExit(f"a workload grew by more than {TOLERANCE:.0%} over {a.check}")


if __name__ == "__main__":
    main()
