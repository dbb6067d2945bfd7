"""Instructions Redis spends per call of the write scripts, under callgrind.

A Redis store's session writes are bound by Redis running a script per
write, not by sessiongate. This runs redis-server under `valgrind
--tool=callgrind` on a free port, loads each script as the store
assembles it, stores one session and sends the script CALLS times with
redis-benchmark, with the arguments of the benchmark's write (a session
unchanged since it was read): put.lua (deadline.lua + put.lua), the
common write, and save.lua (deadline.lua + merge.lua + save.lua) on its
path for a session still as read, which a cycle takes; and put.lua with
BATCH writes in one call, as the store sends the writes that queue while
a call is in flight. It prints the instructions per write, beside two floors measured the same way:
`return 1` with save's arguments and prelude, and `return 1` alone. Instruction counts do not depend on the machine's
load, so two builds' scripts compare across runs.

    python3 bench/redis_script.py [--calls 2000]
    python3 bench/redis_script.py --check bench/redis_script.baseline.json

--check FILE fails (exit 1) when a put or save costs more than 5% over the
baseline in FILE (recorded with --write FILE and the same --calls: a
call's share of the fixed costs depends on their number).
"""

import argparse
import glob
import json
import os
import socket
import subprocess
import tempfile
import time

LUA = os.path.join(os.path.dirname(__file__), "..", "src", "store", "redis")
DATA = '{"n":1,"name":"bench","roles":["user"],"user_id":42}'
KEY = "sessiongate:{lv_I4ZeioGva4hu1Ovx6Kg}"
TOLERANCE = 0.05
# Writes in one call of put.lua for the batched row: about what 64 writers
# through one instance make (16.5 a call in bench/run.py's write).
BATCH = 16


def lua(name):
    with open(os.path.join(LUA, name)) as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--check", help="baseline file: fail when put or save grows by more than 5%%")
    ap.add_argument("--write", help="record this run's put and save as the baseline in this file")
    args = ap.parse_args()
    counts = {}
    port = free_port()
    work = tempfile.mkdtemp(prefix="sg-redis-script-")

    def cli(*a):
        return subprocess.run(["redis-cli", "-p", str(port), *a],
                              capture_output=True, text=True).stdout.strip()

    vg = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out",
         "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if cli("ping") == "PONG":
                break
            time.sleep(0.3)
        prelude = lua("deadline.lua") + lua("merge.lua")
        put = lua("deadline.lua") + lua("put.lua")
        # (row, script, arguments, writes a call, name in a baseline)
        scripts = [
            ("put (the common write)", put, "put", 1, "put"),
            (f"put, {BATCH} writes a call (a write's share)", put, "put", BATCH, "put_batched"),
            ("save (session as read)", prelude + lua("save.lua"), "save", 1, "save"),
            ("return 1, save's arguments and prelude", prelude + "return 1", "save", 1, None),
            ("return 1, no arguments", "return 1", None, 1, None),
        ]
        print(f"instructions per write in redis-server, {args.calls} calls (callgrind)")
        print("| script | instructions |")
        print("| --- | ---: |")
        for name, text, kind, writes, guarded in scripts:
            sha = cli("script", "load", text)
            now = int(time.time() * 1000)
            keys = [KEY] + [f"{KEY[:-1]}{n}}}" for n in range(1, writes)]
            for key in keys:
                cli("hset", key, "d", DATA, "sid", "s1", "c", str(now), "e", str(now + 10**9))
            argv = {
                "save": [str(now), "1209600", "-1", "65536", "", str(now + 10**9), DATA, DATA],
                "put": [str(now), str(now + 10**9), DATA, str(now), "", "", str(now + 10**9), DATA],
                None: [],
            }[kind]
            cmd = ["EVALSHA", sha, str(writes), *keys] + argv * writes
            if guarded:
                # Counted only on the path the bench's write takes.
                reply = cli(*cmd)
                if reply.split("\n")[:writes] != ["saved"] * writes:
                    raise SystemExit(f"{name}: answered {reply!r}, not saved")
            for f in glob.glob(f"{work}/callgrind.out*"):
                os.remove(f)
            subprocess.run(["callgrind_control", "-z"], capture_output=True, check=True)
            subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(args.calls),
                            "-c", "1", "-P", "16", "-q", *cmd], capture_output=True, check=True)
            subprocess.run(["callgrind_control", "-d"], capture_output=True, check=True)
            total = None
            for _ in range(50):
                for path in glob.glob(f"{work}/callgrind.out*"):
                    with open(path) as f:
                        for line in f:
                            if line.startswith("summary:") or line.startswith("totals:"):
                                total = int(line.split()[1])
                if total:
                    break
                time.sleep(0.2)
            per_write = total // args.calls // writes
            print(f"| {name} | {per_write:,} |")
            if guarded:
                counts[guarded] = per_write
    finally:
        cli("shutdown", "nosave")
        vg.wait()
    if args.write:
        with open(args.write, "w") as f:
            json.dump({"calls": args.calls, **counts}, f, indent=2)
            f.write("\n")
    if args.check:
        with open(args.check) as f:
            base = json.load(f)
        if base.pop("calls") != args.calls:
            raise SystemExit(f"{args.check} was recorded with another --calls")
        failed = False
        for script, v in base.items():
            grown = counts[script] / v - 1
            verdict = "ok" if grown <= TOLERANCE else "GREW"
            print(f"{script}: {counts[script]:,} against a baseline of {v:,} ({grown:+.1%}) {verdict}")
            failed |= grown > TOLERANCE
        if failed:
            raise SystemExit(f"a script grew by more than {TOLERANCE:.0%} over {args.check}")


if __name__ == "__main__":
    main()
