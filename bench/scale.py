"""Session reads end to end at 1,000 and 1,000,000 live sessions; called by
`bench/run.sh scale`.

For each store (memory, embedded) and each size, one sessiongate instance is
filled with that many sessions through its own /login (the upstream answers
it with an X-Session-Update), keeping every cookie. Then, in interleaved
rounds, wrk reads with a cookie drawn at random from the instance's cookies
for every request, so that reads spread over all live sessions. Reported:
requests/s and the proxy's CPU per request at each size (medians), the ratio
of the largest size to the smallest, and the memory store's resident memory
per session.

Pinning as in run.py: sessiongate on CPU 0 with one runtime thread; wrk and
the upstream on CPU 1.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from run import (Procs, cpu_seconds, free_port, median, nginx_conf, paired_ratio, sessiongate_conf,
                 status_mib, wait_port, wrk_args, parse_wrk)

STORES = ["memory", "embedded"]

LOGIN_LUA = """
local limit = tonumber(os.getenv("LOGINS"))
local n = 0
local out = io.open(os.getenv("COOKIE_FILE"), "a")
local login = wrk.format("GET", "/login")
local anonymous = wrk.format("GET", "/")
request = function()
  n = n + 1
  if n <= limit then return login end
  return anonymous
end
response = function(status, headers, body)
  local c = headers["set-cookie"] or headers["Set-Cookie"]
  if c then out:write(c:match("^([^;]+)"), "\\n"); out:flush() end
end
"""

# Every request is built once, before the run, and request() returns one
# of them: wrk then allocates nothing per request, so its garbage collector
# never runs during the run. Built per request (wrk.format with a cookie
# drawn each time), every collection walked the million cookies (pauses of
# tens of milliseconds that wrk counted as latency: p99 20-90 ms against 2 ms
# with a thousand cookies), and LuaJIT interning each new request string
# made wrk's cost per request depend on how many distinct cookies there
# were. The built requests are the instance's own, so the load generator's
# remaining difference between sizes is a random pick among a thousand or
# a million strings.
READ_LUA = """
function init(args)
  requests = {}
  for line in io.lines(os.getenv("COOKIE_FILE")) do
    requests[#requests + 1] = wrk.format("GET", "/", {["Cookie"] = line})
  end
  count = #requests
  collectgarbage("collect")
  collectgarbage("stop")
  math.randomseed(os.time())
end
request = function()
  return requests[math.random(count)]
end
"""


def rss_mib(pid):
    return status_mib(pid, "VmRSS")


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def fill(port, n, cookie_file, lua, connections):
    """Creates sessions through /login until the instance holds n of them."""
    while (have := count_lines(cookie_file)) < n:
        # wrk calls request() once before its first connection and sends
        # nothing for it: one more login than wanted.
        want = n - have + 1
        seconds = max(2, want // 10_000 + 2)
        env = dict(os.environ, LOGINS=str(want), COOKIE_FILE=cookie_file)
        subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", lua,
                        f"http://127.0.0.1:{port}/"], env=env, check=True, capture_output=True)
    return count_lines(cookie_file)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--sizes", default="1000,1000000", help="comma-separated numbers of live sessions")
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--stores", default=",".join(STORES), help="comma-separated subset of " + ", ".join(STORES))
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--smoke", action="store_true", help="checks the harness; writes nothing")
    a = ap.parse_args()
    sizes = sorted(int(s) for s in a.sizes.split(","))
    stores = [s for s in STORES if s in a.stores.split(",")]

    work = tempfile.mkdtemp(prefix="sessiongate-scale-")
    procs = Procs()
    try:
        login_lua = os.path.join(work, "login.lua")
        read_lua = os.path.join(work, "read.lua")
        open(login_lua, "w").write(LOGIN_LUA)
        open(read_lua, "w").write(READ_LUA)
        upstream = free_port()
        up_conf = nginx_conf(work, "upstream", upstream, f"""
  server {{
    listen 127.0.0.1:{upstream} reuseport backlog=4096;
    location /login {{ add_header X-Session-Update '{{"user_id":42,"name":"bench","roles":["user"]}}'; return 200 "ok\\n"; }}
    location / {{ return 200 "ok\\n"; }}
  }}""")
        procs.start(["nginx", "-c", up_conf, "-p", work], cpu=1)
        wait_port(upstream)
        env = dict(os.environ, TOKIO_WORKER_THREADS="1", RUST_LOG="warn")
        instances = {}
        for store in stores:
            for n in sizes:
                port = free_port()
                kind = ("{kind: memory, max_sessions: %d}" % (2 * n) if store == "memory"
                        else f"{{kind: embedded, path: {work}/{store}-{n}.db}}")
                conf = sessiongate_conf(work, f"{store}-{n}", port, upstream, kind)
                pid = procs.start([a.binary, "--config", conf], cpu=0, env=env).pid
                wait_port(port)
                before = rss_mib(pid)
                cookies = os.path.join(work, f"{store}-{n}.cookies")
                start = time.time()
                live = fill(port, n, cookies, login_lua, a.connections)
                print(f"{store:<8} {live:>9} sessions created in {time.time() - start:.0f} s", flush=True)
                instances[(store, n)] = {"port": port, "pid": pid, "cookies": cookies, "live": live,
                                         "rss_empty": before, "rss_full": rss_mib(pid)}

        results = {key: [] for key in instances}
        keys = list(instances)
        for r in range(a.rounds):
            for key in (keys if r % 2 == 0 else list(reversed(keys))):
                inst = instances[key]
                env = dict(os.environ, COOKIE_FILE=inst["cookies"])
                before = cpu_seconds(inst["pid"])
                args = wrk_args(inst["port"], "/", None, a.duration, a.connections) + ["-s", read_lua]
                res = parse_wrk(subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout)
                after = cpu_seconds(inst["pid"])
                per_request = 1e6 / max(res["requests"], 1)
                res["user_us"] = (after[0] - before[0]) * per_request
                res["system_us"] = (after[1] - before[1]) * per_request
                res["cpu_us"] = res["user_us"] + res["system_us"]
                results[key].append(res)
                print(f"round {r + 1} {key[0]:<8} {inst['live']:>9} {res['rps']:>9.0f} req/s"
                      f"  CPU {res['cpu_us']:.1f} us/req (user {res['user_us']:.1f})  p99 {res['p99_ms']:.2f} ms  errors {res['errors']}",
                      flush=True)
        report(instances, results, sizes, stores, a)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(instances, results, sizes, stores, a):
    lines = [f"wrk -t1 -c{a.connections}, a random session's cookie on every request, {a.duration} s per run, "
             f"median of {a.rounds} interleaved rounds (ratios: median of each round's ratio); "
             "sessiongate on CPU 0, wrk and the upstream on CPU 1.", "",
             "| store | live sessions | req/s | x smallest | CPU us/req | user | system | CPU x smallest | p99 ms "
             "| RSS MiB | non-2xx |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    verdicts = []

    def paired(store, n, key):
        return paired_ratio(results[(store, n)], results[(store, sizes[0])], key)

    for store in stores:
        small = instances[(store, sizes[0])]
        for n in sizes:
            rs = results[(store, n)]
            rps, cpu = median([r["rps"] for r in rs]), median([r["cpu_us"] for r in rs])
            user, system = median([r["user_us"] for r in rs]), median([r["system_us"] for r in rs])
            p99 = median([r["p99_ms"] for r in rs])
            inst = instances[(store, n)]
            errors = sum(r["errors"] for r in rs)
            lines.append(f"| {store} | {inst['live']} | {rps:.0f} | {paired(store, n, 'rps'):.2f} | {cpu:.1f} | {user:.1f} | "
                         f"{system:.1f} | "
                         f"{paired(store, n, 'cpu_us'):.2f} | {p99:.2f} | {inst['rss_full']:.0f} | {errors} |")
        largest = sizes[-1]
        rps_x = paired(store, largest, "rps")
        verdicts.append(f"{store}: throughput at {instances[(store, largest)]['live']} sessions is {rps_x:.2f}x "
                        f"that at {small['live']} ({'within' if rps_x >= 0.9 else 'not within'} 10%)")
    mem_small, mem_large = instances[("memory", sizes[0])], instances[("memory", sizes[-1])]
    per_session = ((mem_large["rss_full"] - mem_large["rss_empty"]) * 1024 * 1024
                   / max(mem_large["live"], 1))
    lines += ["", *verdicts,
              f"memory store: {per_session:.0f} bytes of resident memory per session "
              f"({mem_large['live']} sessions of four short keys, {mem_large['rss_full']:.0f} MiB in all; "
              f"{mem_small['rss_full']:.0f} MiB with {mem_small['live']})"]
    text = "\n".join(lines)
    print("\n" + text)
    if not a.smoke:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "scale.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
