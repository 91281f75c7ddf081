"""Once a second: the gateway's open file descriptors (/proc/PID/fd), its
resident memory (VmRSS) and the admin endpoint's gauges and counters.

`parse_metrics` (pure) reads the Prometheus text the gateway serves.
"""
import os
import threading
import time
import urllib.request

KEEP = (
    "portcullis_open_connections",
    "portcullis_handshakes_in_progress",
    'portcullis_connections_refused_total{cap="max_connections"}',
    'portcullis_connections_refused_total{cap="max_handshakes"}',
    'portcullis_backend_pool_total{event="discarded_dirty"}',
    'portcullis_backend_pool_total{event="connect"}',
    'portcullis_backend_pool_total{event="hit"}',
)


def parse_metrics(text):
    """{series: value} for every sample line (labels kept as written)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def requests_by_status(metrics):
    """{status: count} summed over routes."""
    out = {}
    for k, v in metrics.items():
        if k.startswith("portcullis_requests_total{") and 'status="' in k:
            status = k.split('status="', 1)[1].split('"', 1)[0]
            out[status] = out.get(status, 0) + v
    return out


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid):
    """{kind: count}: socket, pipe, anon_inode:[...], or the file path."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if target.startswith(("socket:", "pipe:")) else target
        out[kind] = out.get(kind, 0) + 1
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def scrape(admin_port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as r:
            return parse_metrics(r.read().decode())
    except OSError:
        return None


def sample(pid, admin_port):
    s = {"t": time.monotonic(), "fds": fd_count(pid), "rss_kib": rss_kib(pid)}
    m = scrape(admin_port)
    if m is None:
        s["metrics_error"] = True
    else:
        for k in KEEP:
            if k in m:
                s[k] = m[k]
        s["requests_by_status"] = requests_by_status(m)
    return s


class Sampler(threading.Thread):
    def __init__(self, pid, admin_port, samples, stop_event, out):
        super().__init__(name="sampler", daemon=True)
        self.pid, self.admin_port, self.samples = pid, admin_port, samples
        self.stop_event, self.out = stop_event, out
        self.error = None

    def run(self):
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                s = sample(self.pid, self.admin_port)
            except OSError as e:  # the gateway is gone: the orchestrator notices
                self.error = f"{type(e).__name__}: {e}"
                return
            self.samples.append(s)
            self.out.write(s)
            next_at += 1.0
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))
