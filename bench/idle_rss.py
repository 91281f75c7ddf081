#!/usr/bin/env python3
"""RSS per idle mTLS connection: open N idle connections (full mTLS handshake,
then silence), divide the gateway's RSS growth by N. Loopback only, bounded. Writes
bench/results/idle-rss-STAMP.md and .json.

Usage: bench/idle_rss.py [--h2] [N]   (default 10000; needs `ulimit -n` > N + 100)
--h2: the connections choose HTTP/2 by ALPN and exchange the preface and
SETTINGS (an HTTP/2 connection with no streams); otherwise HTTP/1.1.
"""
import datetime, json, os, platform, resource, socket, ssl, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
W = ROOT / "target" / "bench-idle"
H2 = "--h2" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--h2"]
N = int(ARGS[0]) if ARGS else 10000
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_ACK = bytes([0, 0, 0, 4, 1, 0, 0, 0, 0])

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        got = s.recv(n - len(out))
        if not got:
            sys.exit("the gateway closed an HTTP/2 connection during its preface")
        out += got
    return out

def connect(ctx):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT)), server_hostname="localhost")
    if H2:
        if s.selected_alpn_protocol() != "h2":
            sys.exit(f"ALPN chose {s.selected_alpn_protocol()!r}, not h2")
        s.sendall(PREFACE)
        head = recv_exact(s, 9)  # the gateway's SETTINGS
        recv_exact(s, int.from_bytes(head[0:3], "big"))
        s.sendall(SETTINGS_ACK)
    return s
PORT, ECHO = 19643, 19600

def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < N + 200:
        sys.exit(f"open-file limit {hard} < {N + 200}: raise it (ulimit -n) or use a smaller N")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "portcullis", "--bin", "portcullis"], cwd=ROOT, check=True)
    B = ROOT / "target/release/portcullis"
    W.mkdir(parents=True, exist_ok=True)
    subprocess.run([B, "certs", "init", "--out", W / "pki", "--force"], check=True, stdout=subprocess.DEVNULL)
    (W / "gw.toml").write_text(f"""[server]
workers = 1
log_level = "warn"
max_connections = {N + 100}
[[listener]]
address = "127.0.0.1:{PORT}"
certificate = "pki/server.pem"
private_key = "pki/server.key"
client_ca = ["pki/ca.pem"]
[timeouts]
idle = "10m"
request_head = "10m"
[[route]]
path = "/"
backends = ["127.0.0.1:{ECHO}"]
""")
    gw = subprocess.Popen([B, "run", "--config", W / "gw.toml"], stderr=open(W / "gw.log", "w"), preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.1).close(); break
            except OSError:
                time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(W / "pki/ca.pem"))
        ctx.load_cert_chain(str(W / "pki/client.pem"), str(W / "pki/client.key"))
        ctx.set_alpn_protocols(["h2"] if H2 else ["http/1.1"])
        # A few warm-up connections so one-time allocations are not charged to N.
        warm = [connect(ctx) for _ in range(50)]
        time.sleep(0.5)
        base = rss_kib(gw.pid)
        conns, t0 = [], time.time()
        for i in range(N):
            conns.append(connect(ctx))
            if time.time() - t0 > 300:
                sys.exit(f"stopped after {i} connections: over 300 s")
        time.sleep(1.0)
        after = rss_kib(gw.pid)
        per = (after - base) * 1024 / N
        proto = "HTTP/2" if H2 else "HTTP/1.1"
        line = (f"idle mTLS {proto} connections: {N}; gateway RSS {base} KiB -> {after} KiB; {per:.0f} bytes ({per / 1024:.1f} KiB) "
                f"per idle connection; {time.time() - t0:.1f} s to open")
        print(line)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ") + ("-h2" if H2 else "")
        out = ROOT / "bench/results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"idle-rss-{stamp}.md").write_text(f"Measured {stamp} on {platform.node()} ({platform.release()}), one worker, "
                                                   f"userspace TLS, `bench/idle_rss.py {'--h2 ' if H2 else ''}{N}`:\n\n{line}\n")
        (out / f"idle-rss-{stamp}.json").write_text(json.dumps({"when": stamp, "protocol": proto, "connections": N, "rss_before_kib": base,
                                                                "rss_after_kib": after, "bytes_per_connection": round(per)}, indent=2) + "\n")
        for s in conns + warm:
            s.close()
    finally:
        gw.terminate()
        gw.wait(timeout=15)

main()
