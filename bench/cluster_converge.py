#!/usr/bin/env python3
"""Cluster convergence: how long from `portcullis config push` to the last of
three nodes serving the pushed revision.

Starts a real etcd (Debian's etcd-server 3.4) on loopback with a scratch data
dir, the echo backend and three gateway nodes (`portcullis run` on [cluster]
bootstrap files, one worker each), pushes a first config, then BENCH_PUSHES
times pushes a config that differs by one route header and polls each node's
/metrics (portcullis_config_revision) every millisecond until all three serve
the pushed revision. Two times per push:

  push -> last node:   from starting `portcullis config push` (which
                       validates the file and loads its certificates, as
                       `check` does, before writing) to the last node applied;
  commit -> last node: from the push command's exit (the txn is committed)
                       to the last node applied: watch event, range read,
                       build and load of the new generation, swap.

It then checks that every node answers on the new route's header, so
"applied" is also "served". Uses target/release/portcullis if built, else
target/debug/portcullis (the JSON says which). Loopback only, bounded (a few
seconds). Writes bench/results/cluster-converge-<UTC>.{md,json}.
Env: BENCH_PUSHES (default 20).
"""
import datetime
import json
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUSHES = int(os.environ.get("BENCH_PUSHES", "20"))
NODES = 3
PREFIX = "/portcullis/"


def binary():
    for kind in ("release", "debug"):
        b = ROOT / "target" / kind / "portcullis"
        if b.exists():
            return b, kind
    sys.exit("build the gateway first: cargo build (or --release)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, what):
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what}: nothing listens on {port}")


def revision(admin):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2).read().decode()
    except OSError:
        return -1
    for line in body.splitlines():
        if line.startswith("portcullis_config_revision "):
            return int(float(line.split()[1]))
    return -1


def write_config(shared, echo_port, version):
    (shared / "config.toml").write_text(
        '[[listener]]\naddress = "127.0.0.1:1"\ncertificate = "certs/server.pem"\n'
        'private_key = "certs/server.key"\nclient_ca = ["certs/ca.pem"]\n\n'
        f'[[route]]\npath = "/"\nbackends = ["127.0.0.1:{echo_port}"]\n'
        f'set_headers = {{ "X-Config-Version" = "{version}" }}\n'
    )
    return shared / "config.toml"


def push(bin_, bootstrap, config):
    out = subprocess.run(
        [bin_, "config", "push", "--cluster", bootstrap, config],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode != 0:
        sys.exit(f"config push failed: {out.stdout}{out.stderr}")
    return int(out.stdout.split("as revision ")[1].split()[0])


def served_version(port, certs):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    req = urllib.request.Request(f"https://localhost:{port}/v")
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        return json.loads(r.read())["headers"].get("x-config-version")


def main():
    bin_, kind = binary()
    work = Path(tempfile.mkdtemp(prefix="cluster-converge-"))
    procs = []
    try:
        certs = work / "certs"
        subprocess.run([bin_, "certs", "init", "--out", certs], check=True, capture_output=True)
        shared = work / "shared"
        (shared / "certs").mkdir(parents=True)
        for f in ("ca.pem", "server.pem", "server.key"):
            shutil.copy(certs / f, shared / "certs" / f)
        cport, pport = free_port(), free_port()
        endpoint = f"http://127.0.0.1:{cport}"
        peer = f"http://127.0.0.1:{pport}"
        etcd_log = open(work / "etcd.log", "w")
        procs.append(subprocess.Popen(
            ["etcd", "--name", "b", "--data-dir", work / "etcd", "--listen-client-urls", endpoint,
             "--advertise-client-urls", endpoint, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"b={peer}",
             "--log-level", "warn"], stdout=etcd_log, stderr=etcd_log))
        wait_port(cport, "etcd")
        echo_port = free_port()
        procs.append(subprocess.Popen([bin_, "echo", "--listen", f"127.0.0.1:{echo_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(echo_port, "echo")
        nodes = []
        for i in range(NODES):
            d = work / f"node{i}"
            d.mkdir()
            port, admin = free_port(), free_port()
            (d / "node.toml").write_text(
                f'[server]\nworkers = 1\n\n[admin]\naddress = "127.0.0.1:{admin}"\n\n'
                f'[cluster]\nstore = "etcd"\nendpoints = ["{endpoint}"]\nprefix = "{PREFIX}"\n'
                f'snapshot = "cluster.snapshot"\nlisten = ["127.0.0.1:{port}"]\n'
            )
            nodes.append((d / "node.toml", port, admin))
        bootstrap = nodes[0][0]
        deadline = time.time() + 15
        while True:
            try:
                first = push(bin_, bootstrap, write_config(shared, echo_port, 0))
                break
            except SystemExit:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        for toml, port, _ in nodes:
            log = open(toml.parent / "node.log", "w")
            procs.append(subprocess.Popen([bin_, "run", "--config", toml], stdout=log, stderr=log))
            wait_port(port, "node")
        for _, _, admin in nodes:
            while revision(admin) != first:
                time.sleep(0.01)

        samples = []
        for n in range(1, PUSHES + 1):
            config = write_config(shared, echo_port, n)
            t0 = time.monotonic()
            rev = push(bin_, bootstrap, config)
            t1 = time.monotonic()
            pending = {admin for _, _, admin in nodes}
            applied = {}
            while pending:
                if time.monotonic() - t0 > 10:
                    sys.exit(f"push {n}: nodes {sorted(pending)} did not apply revision {rev}")
                for admin in list(pending):
                    if revision(admin) == rev:
                        applied[admin] = time.monotonic()
                        pending.discard(admin)
                time.sleep(0.001)
            last = max(applied.values())
            for _, port, _ in nodes:
                got = served_version(port, certs)
                if got != str(n):
                    sys.exit(f"push {n}: node on {port} serves version {got}")
            samples.append({"revision": rev, "push_to_last_ms": (last - t0) * 1000,
                            "commit_to_last_ms": (last - t1) * 1000,
                            "push_command_ms": (t1 - t0) * 1000})
            time.sleep(0.05)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    def summary(key):
        v = sorted(s[key] for s in samples)
        return {"median": statistics.median(v), "p90": v[int(0.9 * (len(v) - 1))], "max": v[-1],
                "min": v[0]}

    etcd_version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    result = {
        "what": "push -> last of 3 nodes applied (portcullis_config_revision), loopback",
        "binary": kind, "nodes": NODES, "pushes": PUSHES, "etcd": etcd_version,
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "push_to_last_ms": summary("push_to_last_ms"),
        "commit_to_last_ms": summary("commit_to_last_ms"),
        "push_command_ms": summary("push_command_ms"),
        "samples": samples,
    }
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    out = ROOT / "bench" / "results"
    (out / f"cluster-converge-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {result[k]['median']:.0f} | {result[k]['p90']:.0f} | {result[k]['max']:.0f} |"
        for name, k in (("push -> last node applied", "push_to_last_ms"),
                        ("commit -> last node applied", "commit_to_last_ms"),
                        ("`config push` itself (validate + txn)", "push_command_ms")))
    md = (f"# Cluster convergence ({stamp})\n\n"
          f"{NODES} nodes (one worker each), one etcd ({etcd_version}), loopback, {PUSHES} pushes, "
          f"{kind} binary; goal: under 1 s from push to the last node.\n\n"
          "| ms | median | p90 | max |\n|---|---|---|---|\n" + rows + "\n\n"
          "Applied = the node's `portcullis_config_revision` shows the pushed revision (polled every 1 ms); "
          "after each push every node was checked to answer with the new route header.\n")
    (out / f"cluster-converge-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
