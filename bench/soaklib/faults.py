"""Injected faults: the echo backend behind /e/ killed with SIGKILL and
started again on the same port, stopped (SIGSTOP) past the gateway's
response timeout (a hang) or well under it (a stall), and connection floods
past the gateway's handshake cap.

The schedule is drawn from the run's seed before the run starts
(`make_schedule`, pure), so a failing run can be repeated. Every fault is
recorded as an event {kind, target, t0, t1} on the monotonic clock;
`expect.classify` lets a request that overlapped one have that fault's
coded errors.
"""
import os
import random
import signal
import socket
import subprocess
import threading
import time

from .common import abort, die_with_parent

# kind -> weight. The run's first fault comes after FIRST_AT seconds; each
# next one 20-40 s after the previous one ended; none starts in the last
# QUIET_END seconds, so the end-of-run check sees a settled gateway.
WEIGHTS = {"kill9": 35, "stall": 25, "hang": 20, "cap_flood": 20}
FIRST_AT = 15.0
QUIET_END = 25.0
CAP_FLOOD_HOLD = 3.0


def make_schedule(seed, run_s, timeouts):
    """[(start offset s, kind, duration s)] for a run of `run_s` seconds."""
    rng = random.Random(seed)
    out = []
    at = FIRST_AT
    while True:
        kind = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
        if kind == "kill9":
            dur = rng.uniform(0.3, 3.0)       # down time before the restart
        elif kind == "stall":
            dur = rng.uniform(0.5, 1.5)       # far under every timeout
        elif kind == "hang":
            dur = timeouts["backend_response"] + rng.uniform(1.0, 3.0)
        else:
            dur = CAP_FLOOD_HOLD
        if at + dur + QUIET_END > run_s:
            return out
        out.append((round(at, 3), kind, round(dur, 3)))
        at += dur + rng.uniform(20.0, 40.0)


class EchoBackend:
    """`portcullis echo` on a fixed port, restartable."""

    def __init__(self, binary, port, log_path, cpu, env):
        self.binary, self.port, self.log_path, self.cpu, self.env = binary, port, log_path, cpu, env
        self.proc = None
        self.starts = 0

    def start(self):
        cmd = [self.binary, "echo", "--listen", f"127.0.0.1:{self.port}", "--workers", "1"]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu)] + cmd
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env, preexec_fn=die_with_parent)
        log.close()
        self.starts += 1
        if not wait_port(self.port, 10.0):
            raise RuntimeError(f"echo backend on port {self.port} did not start (see {self.log_path})")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def terminate(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_port(port, within):
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cap_flood(port, n, hold, stopped):
    """n silent TCP connections at once (past the handshake cap), held
    `hold` seconds, then reset. Returns how many connected."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        socks.append(s)
    until = time.monotonic() + hold
    while time.monotonic() < until and not stopped():
        time.sleep(0.1)
    for s in socks:
        abort(s)
    return len(socks)


class Injector(threading.Thread):
    """Runs the schedule against `echo` (the /e/ backend) and the gateway."""

    def __init__(self, schedule, t_start, echo, gateway_port, flood_size, events, stop_event, log):
        super().__init__(name="faults", daemon=True)
        self.schedule, self.t_start, self.echo = schedule, t_start, echo
        self.gateway_port, self.flood_size = gateway_port, flood_size
        self.events, self.stop_event, self.log = events, stop_event, log
        self.error = None

    def run(self):
        try:
            for at, kind, dur in self.schedule:
                if self.stop_event.wait(max(0.0, self.t_start + at - time.monotonic())):
                    return
                self.inject(kind, dur)
            # Stay until the run ends: an echo backend restarted from this
            # thread gets SIGKILL when the thread exits (PR_SET_PDEATHSIG
            # follows the parent thread, not the process).
            self.stop_event.wait()
        except Exception as e:  # reported as a soak failure, never swallowed
            self.error = f"{type(e).__name__}: {e}"
            self.log(f"fault injector failed: {self.error}")
        finally:
            self.echo.signal(signal.SIGCONT)

    def inject(self, kind, dur):
        t0 = time.monotonic()
        detail = ""
        if kind == "kill9":
            self.echo.kill9()
            self.stop_event.wait(dur)
            self.echo.start()
            detail = f"down {dur:.1f} s"
        elif kind in ("stall", "hang"):
            self.echo.signal(signal.SIGSTOP)
            try:
                self.stop_event.wait(dur)
            finally:
                self.echo.signal(signal.SIGCONT)
            detail = f"SIGSTOP {dur:.1f} s"
        elif kind == "cap_flood":
            n = cap_flood(self.gateway_port, self.flood_size, dur, self.stop_event.is_set)
            detail = f"{n} silent connections for {dur:.1f} s"
        target = "*" if kind == "cap_flood" else "e"
        ev = dict(kind=kind, target=target, t0=t0, t1=time.monotonic(), detail=detail)
        self.events.append(ev)
        self.log(f"fault {kind} {detail}")
