#!/usr/bin/env python3
"""One worker's memory at rest, at peak under mixed load, and after the load.

Starts the echo backend and a one-worker gateway (release build), records
its RSS and open fds at rest, then runs two load phases with pcl-load:
full mTLS handshakes (16 connections, a new one per request), then 64
keep-alive connections fetching 64 KiB bodies; RSS is sampled every 0.25 s
for the peak. After the load stops it records RSS again at +5 s and +30 s.
The goal (issue: memory under load): after the load, RSS within 2x of rest.

Usage: bench/rss_load.py   Env: RSS_PHASE_SECONDS (default 60 each).
Writes bench/results/rss-load-<UTC>.{md,json}. Loopback only, bounded.
"""
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
W = ROOT / "target" / "bench-rss"
PORT, ECHO = 19743, 19700
PHASE = int(os.environ.get("RSS_PHASE_SECONDS", "60"))
GEN_CORE, GW_CORE = "0", "1" if (os.cpu_count() or 1) > 1 else "0"


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_port(port):
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


class Peak(threading.Thread):
    """Samples RSS every 0.25 s until stopped; keeps the maximum."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.stopped.wait(0.25)


def load(pcl, args):
    cmd = ["taskset", "-c", GEN_CORE, str(pcl), "-t", "1", "--pin", GEN_CORE, "-d", f"{PHASE}s",
           "--cert", str(W / "pki/client.pem"), "--key", str(W / "pki/client.key"),
           "--cacert", str(W / "pki/ca.pem"), *args, f"https://localhost:{PORT}/bench"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=PHASE + 60)
    return out.stdout.strip().splitlines()[-1:] if out.stdout else [out.stderr.strip()[-200:]]


def main():
    for pkg in (["-p", "portcullis", "--bin", "portcullis"], ["-p", "portcullis-bench", "--bin", "pcl-load"]):
        subprocess.run(["cargo", "build", "--release", "--locked", *pkg], cwd=ROOT, check=True)
    binary, pcl = ROOT / "target/release/portcullis", ROOT / "target/release/pcl-load"
    W.mkdir(parents=True, exist_ok=True)
    subprocess.run([binary, "certs", "init", "--out", W / "pki", "--key-type", "ecdsa-p256", "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    (W / "gw.toml").write_text(f"""[server]
workers = 1
log_level = "warn"
access_log = false
[[listener]]
address = "127.0.0.1:{PORT}"
certificate = "pki/server.pem"
private_key = "pki/server.key"
client_ca = ["pki/ca.pem"]
[pool]
max_idle_per_backend = 128
[[route]]
path = "/"
backends = ["127.0.0.1:{ECHO}"]
""")
    echo = subprocess.Popen(["taskset", "-c", GW_CORE, binary, "echo", "--listen", f"127.0.0.1:{ECHO}", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen(["taskset", "-c", GW_CORE, binary, "run", "--config", W / "gw.toml"],
                          stdout=subprocess.DEVNULL, stderr=open(W / "gw.log", "w"))
    try:
        wait_port(ECHO)
        wait_port(PORT)
        time.sleep(2)
        rest = {"rss_kib": rss_kib(gw.pid), "fds": fds(gw.pid)}
        peak = Peak(gw.pid)
        peak.start()
        phases = {
            "handshakes": load(pcl, ["-c", "16", "--new-conn"]),
            "keepalive_64k": load(pcl, ["-c", "64", "-H", "x-echo-bytes: 65536"]),
        }
        peak.stopped.set()
        peak.join()
        time.sleep(5)
        after5 = {"rss_kib": rss_kib(gw.pid), "fds": fds(gw.pid)}
        time.sleep(25)
        after30 = {"rss_kib": rss_kib(gw.pid), "fds": fds(gw.pid)}
    finally:
        for p in (gw, echo):
            p.terminate()
            p.wait(timeout=15)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    ratio = after30["rss_kib"] / rest["rss_kib"] if rest["rss_kib"] else 0
    res = {"when": stamp, "commit": commit, "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.release()}",
           "phase_s": PHASE, "rest": rest, "peak_rss_kib": peak.peak, "after_5s": after5, "after_30s": after30,
           "after_over_rest": round(ratio, 2), "goal_met": ratio <= 2.0, "load": phases}
    mib = lambda k: f"{k / 1024:.1f} MiB"
    md = (f"# One worker's memory under mixed load, {stamp}\n\n`bench/rss_load.py` on commit `{commit}`, {res['machine']}; "
          f"{PHASE} s of full mTLS handshakes (16 connections), then {PHASE} s of 64 keep-alive connections fetching 64 KiB.\n\n"
          "| at rest | peak | 5 s after | 30 s after | after ÷ rest | goal (≤ 2x) |\n|---:|---:|---:|---:|---:|---|\n"
          f"| {mib(rest['rss_kib'])}, {rest['fds']} fds | {mib(peak.peak)} | {mib(after5['rss_kib'])}, {after5['fds']} fds | "
          f"{mib(after30['rss_kib'])}, {after30['fds']} fds | {ratio:.2f}x | {'met' if ratio <= 2.0 else 'not met'} |\n\n"
          + "".join(f"- {k}: `{' '.join(v)}`\n" for k, v in phases.items()))
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rss-load-{stamp}.md").write_text(md)
    (out / f"rss-load-{stamp}.json").write_text(json.dumps(res, indent=2))
    print(md)


main()
