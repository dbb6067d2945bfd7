"""Instructions Redis spends per call of the write scripts, under callgrind.

A Redis store's session writes are bound by Redis running a script per
write, not by sessiongate. This runs redis-server under `valgrind
--tool=callgrind` on a free port, loads each script as the store
assembles it, stores one session and sends the script CALLS times with
redis-benchmark, with the arguments of the benchmark's write (a session
unchanged since it was read): put.lua (deadline.lua + put.lua), the
common write, and save.lua (deadline.lua + merge.lua + save.lua) on its
path for a session still as read, which a cycle takes. It prints the
instructions per call, beside two floors measured the same way:
`return 1` with save's arguments and prelude, and `return 1` alone. Instruction counts do not depend on the machine's
load, so two builds' scripts compare across runs.

    python3 bench/redis_script.py [--calls 2000]
"""

import argparse
import glob
import os
import socket
import subprocess
import tempfile
import time

LUA = os.path.join(os.path.dirname(__file__), "..", "src", "store", "redis")
DATA = '{"n":1,"name":"bench","roles":["user"],"user_id":42}'
KEY = "sessiongate:{lv_I4ZeioGva4hu1Ovx6Kg}"


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
    args = ap.parse_args()
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
        scripts = [
            ("put (the common write)", lua("deadline.lua") + lua("put.lua"), "put"),
            ("save (session as read)", prelude + lua("save.lua"), "save"),
            ("return 1, save's arguments and prelude", prelude + "return 1", "save"),
            ("return 1, no arguments", "return 1", None),
        ]
        print(f"instructions per EVALSHA in redis-server, {args.calls} calls (callgrind)")
        print("| script | instructions |")
        print("| --- | ---: |")
        for name, text, kind in scripts:
            sha = cli("script", "load", text)
            now = int(time.time() * 1000)
            cli("hset", KEY, "d", DATA, "sid", "s1", "c", str(now), "e", str(now + 10**9))
            argv = {
                "save": [str(now), "1209600", "-1", "65536", "", str(now + 10**9), DATA, DATA],
                "put": [str(now), str(now + 10**9), DATA, str(now), "", "", str(now + 10**9), DATA],
                None: [],
            }[kind]
            cmd = ["EVALSHA", sha, "1", KEY] + argv
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
            print(f"| {name} | {total // args.calls:,} |")
    finally:
        cli("shutdown", "nosave")
        vg.wait()


if __name__ == "__main__":
    main()
