"""The well-behaved bulk: pcl-load (bench/) in back-to-back segments of at
most a minute, so each segment's errors can be set against the faults that
overlapped it (`expect.classify_pcl`). pcl-load targets the never-faulted
echo route (/s/): it does not verify bodies, so it must see nothing but 2xx.
"""
import json
import os
import subprocess
import threading
import time

from .common import die_with_parent

SEGMENT_S = 60.0
# pcl-load's own bound: warm-up (<= 2 s) + duration + grace (<= 2 s).
OVERHEAD_S = 4.0

# name -> (extra pcl-load arguments, path)
STREAMS = {
    "keepalive_get": (["-c", "4", "-R", "200"], "/s/ka"),
    "keepalive_upload": (["-c", "2", "-R", "20", "-m", "POST", "--body-size", "65536"], "/s/up"),
    "keepalive_download": (["-c", "2", "-R", "10", "-H", "x-echo-bytes: 1048576"], "/s/dl"),
    "new_handshake": (["-c", "2", "-R", "20", "--new-conn"], "/s/nc"),
}


class Stream(threading.Thread):
    def __init__(self, name, binary, gateway_port, pki, workdir, t_end, cpu, segments, log):
        super().__init__(name=f"pcl-{name}", daemon=True)
        self.stream, self.binary, self.port, self.pki = name, binary, gateway_port, pki
        self.workdir, self.t_end, self.cpu = workdir, t_end, cpu
        self.segments, self.log = segments, log
        self.proc = None
        self.halt = threading.Event()

    def command(self, seconds, json_path):
        extra, path = STREAMS[self.stream]
        cmd = [self.binary, "-t", "1", "-d", f"{seconds:.0f}s", "--timeout", "10s",
               "--cacert", os.path.join(self.pki, "ca.pem"),
               "--cert", os.path.join(self.pki, "client.pem"),
               "--key", os.path.join(self.pki, "client.key"),
               "--sni", "localhost", "--json", json_path] + extra + [f"https://127.0.0.1:{self.port}{path}"]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu)] + cmd
        return cmd

    def run(self):
        n = 0
        while not self.halt.is_set():
            left = self.t_end - time.monotonic() - OVERHEAD_S
            seconds = min(SEGMENT_S, left)
            if seconds < 5:
                return
            n += 1
            json_path = os.path.join(self.workdir, f"pcl-{self.stream}-{n:03d}.json")
            cmd = self.command(seconds, json_path)
            t0 = time.monotonic()
            with open(os.path.join(self.workdir, f"pcl-{self.stream}.log"), "a") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, preexec_fn=die_with_parent)
                try:
                    code = self.proc.wait(timeout=seconds + OVERHEAD_S + 10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    code = self.proc.wait()
            seg = dict(stream=self.stream, n=n, t0=t0, t1=time.monotonic(), exit=code, command=cmd)
            try:
                with open(json_path) as f:
                    seg["json"] = json.load(f)
            except (OSError, ValueError):
                seg["json"] = None
            self.segments.append(seg)

    def stop(self):
        self.halt.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
