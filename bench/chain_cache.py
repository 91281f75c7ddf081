#!/usr/bin/env python3
"""Full mTLS handshakes with the verified-chain cache on and off, for
returning clients and for all-new clients.

Builds the release gateway and pcl-load, makes one CA with 5,000 client
certificates (more than the default cache of 4,096, so all-new clients
never hit), and runs a new connection and full handshake per request
(16 connections, pcl-load on core 0, gateway and echo backend on core 1)
against two gateways that differ only in `[tls] verified_chain_cache`
(4096 and 0). Each (gateway, clients) pair runs BENCH_DURATION s, BENCH_ROUNDS
times, interleaved; the table gives medians of req/s and of requests per
gateway CPU-second, and the cache's own hit/miss counters from /metrics.

Writes bench/results/chain-cache-<UTC>.{md,json}. Loopback only, bounded.
Env: BENCH_DURATION (default 10), BENCH_ROUNDS (default 3).
"""
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
W = ROOT / "target" / "bench-chain-cache"
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ECHO = 19800
GATEWAYS = {"cache on (4096)": (19843, 19901, 4096), "cache off": (19844, 19902, 0)}
CLIENTS = 5000
GEN_CORE, GW_CORE = "0", "1" if (os.cpu_count() or 1) > 1 else "0"
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def wait_port(port):
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cache_counts(admin):
    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("portcullis_verified_chain_cache_total{"):
            event = line.split('"')[1]
            out[event] = float(line.rsplit(" ", 1)[1])
    return out


def main():
    for pkg in (["-p", "portcullis", "--bin", "portcullis"], ["-p", "portcullis-bench", "--bin", "pcl-load"]):
        subprocess.run(["cargo", "build", "--release", "--locked", *pkg], cwd=ROOT, check=True)
    binary, pcl = ROOT / "target/release/portcullis", ROOT / "target/release/pcl-load"
    W.mkdir(parents=True, exist_ok=True)
    pki = W / "pki"
    subprocess.run([binary, "certs", "init", "--out", pki, "--key-type", "ecdsa-p256", "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    many = W / "clients"
    if not (many / f"client-{CLIENTS:05d}.pem").exists():
        many.mkdir(exist_ok=True)
        subprocess.run([binary, "certs", "issue", "--ca-dir", pki, "--out", many, "--stem", "client",
                        "--cn", "client", "--count", str(CLIENTS)], check=True, stdout=subprocess.DEVNULL)
    procs = [subprocess.Popen(["taskset", "-c", GW_CORE, binary, "echo", "--listen", f"127.0.0.1:{ECHO}",
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    gws = {}
    for name, (port, admin, cache) in GATEWAYS.items():
        cfg = W / f"gw-{port}.toml"
        cfg.write_text(f"""[server]
workers = 1
log_level = "warn"
access_log = false
[admin]
address = "127.0.0.1:{admin}"
[tls]
verified_chain_cache = {cache}
[[listener]]
address = "127.0.0.1:{port}"
certificate = "{pki}/server.pem"
private_key = "{pki}/server.key"
client_ca = ["{pki}/ca.pem"]
[[route]]
path = "/"
backends = ["127.0.0.1:{ECHO}"]
""")
        p = subprocess.Popen(["taskset", "-c", GW_CORE, binary, "run", "--config", cfg],
                             stdout=subprocess.DEVNULL, stderr=open(W / f"gw-{port}.log", "w"))
        procs.append(p)
        gws[name] = (p, port, admin)
    rows = []
    try:
        wait_port(ECHO)
        for _, port, _ in gws.values():
            wait_port(port)
        for rnd in range(1, ROUNDS + 1):
            for clients, who in (("returning", ["--cert", str(pki / "client.pem"), "--key", str(pki / "client.key")]),
                                 ("all new", ["--client-certs", str(many)])):
                for name, (p, port, admin) in gws.items():
                    before_cpu, before = cpu_seconds(p.pid), cache_counts(admin)
                    out = W / "load.json"
                    out.unlink(missing_ok=True)
                    subprocess.run(["taskset", "-c", GEN_CORE, str(pcl), "-t", "1", "--pin", GEN_CORE,
                                    "-d", f"{DURATION}s", *who, "--cacert", str(pki / "ca.pem"),
                                    "--json", str(out), "-c", "16", "--new-conn", f"https://localhost:{port}/bench"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=DURATION + 60, check=True)
                    j = json.loads(out.read_text())
                    cpu = cpu_seconds(p.pid) - before_cpu
                    time.sleep(1.2)  # workers publish their counters once a second
                    after = cache_counts(admin)
                    row = {"round": rnd, "gateway": name, "clients": clients, "requests": j.get("requests", 0),
                           "rps": j.get("rps", 0.0), "per_core_s": j.get("requests", 0) / cpu if cpu > 0 else 0.0,
                           "errors": j.get("errors_total", 0),
                           "hits": after.get("hit", 0) - before.get("hit", 0),
                           "misses": after.get("miss", 0) - before.get("miss", 0)}
                    rows.append(row)
                    print(f"round {rnd} {clients:9} {name:16} {row['rps']:8.0f} req/s {row['per_core_s']:8.0f} /core-s "
                          f"hits {row['hits']:.0f} misses {row['misses']:.0f} errors {row['errors']}", flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=15)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [f"# Verified-chain cache, {stamp}", "",
             f"`bench/chain_cache.py` on commit `{commit}`, {platform.node()}: {os.cpu_count()} cores, {platform.release()}; "
             f"a full mTLS handshake per request (16 connections), {ROUNDS} interleaved rounds of {DURATION} s, medians; "
             f"all-new clients cycle through {CLIENTS} certificates (more than the cache holds).", "",
             "| clients | gateway | req/s | req/s per gateway core-second | cache hits | misses | errors | on ÷ off (req/s, per core-s) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    med = {}
    for clients in ("returning", "all new"):
        for name in GATEWAYS:
            rs = [r for r in rows if r["clients"] == clients and r["gateway"] == name]
            med[(clients, name)] = {k: statistics.median([r[k] for r in rs]) for k in ("rps", "per_core_s")}
            med[(clients, name)].update(hits=sum(r["hits"] for r in rs), misses=sum(r["misses"] for r in rs),
                                        errors=sum(r["errors"] for r in rs))
        on, off = med[(clients, "cache on (4096)")], med[(clients, "cache off")]
        for name in GATEWAYS:
            m = med[(clients, name)]
            ratio = (f"{on['rps'] / off['rps']:.2f}x, {on['per_core_s'] / off['per_core_s']:.2f}x"
                     if name == "cache on (4096)" and off["rps"] and off["per_core_s"] else "")
            lines.append(f"| {clients} | {name} | {m['rps']:.0f} | {m['per_core_s']:.0f} | {m['hits']:.0f} | "
                         f"{m['misses']:.0f} | {m['errors']} | {ratio} |")
    md = "\n".join(lines) + "\n"
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"chain-cache-{stamp}.md").write_text(md)
    (out / f"chain-cache-{stamp}.json").write_text(json.dumps({"when": stamp, "commit": commit, "rows": rows}, indent=2))
    print(md)


main()
