"""Hostile clients, all at once, for as long as the soak runs: slowloris
heads and bodies, idle mTLS connections, silent and half-ClientHello TCP
connections (a flood kept below the handshake cap: floods past it are an
injected fault, see faults.py), garbage before and after TLS, a smuggling
shape, clients that never read a large response, and clients that reset
mid-upload or mid-download.

Each attempt is written to a JSON-lines file with what the client saw (the
status and code, if any) and how long the gateway took to close it;
`expect.classify_hostile` checks that against the configured timeouts. They
all target the never-faulted echo route (/s/), so a backend fault never
changes what the gateway owes them.

Run: python3 -m soaklib.hostile PARAMS.json
"""
import json
import random
import select
import socket
import sys
import threading
import time

from .common import JsonLines, abort, client_context, stop_flag, tls_connect
from .wire import ProtocolError, parse_head

GIVE_UP = 20.0  # seconds past the bound the client waits for the gateway to act


class Hostile:
    def __init__(self, p):
        self.p = p
        self.addr = ("127.0.0.1", p["gateway_port"])
        self.ctx = client_context(p["pki"])
        self.out = JsonLines(p["out"])
        self.stop = stop_flag(p["stop_file"])
        self.t = p["timeouts"]
        self.rng = random.Random(p["seed"] * 7919)
        self.lock = threading.Lock()

    def rand(self):
        with self.lock:
            return random.Random(self.rng.random())

    def record(self, kind, t0, **kw):
        rec = dict(kind=kind, t0=t0, t1=time.monotonic(), closed=False, status=None, code=None, detail="")
        rec.update(kw)
        self.out.write(rec)

    def sleep(self, s):
        until = time.monotonic() + s
        while time.monotonic() < until and not self.stop():
            time.sleep(min(0.2, until - time.monotonic()))

    # -- a connection the gateway is expected to close --------------------

    def watch(self, sock, limit, feed=None, every=0.5):
        """Waits (up to `limit` s) for the gateway to close `sock`, sending
        feed() bytes every `every` s meanwhile. Returns (closed, seconds,
        response bytes seen)."""
        t0 = time.monotonic()
        got = bytearray()
        sock.settimeout(every)
        while time.monotonic() - t0 < limit:
            if feed is not None:
                data = feed()
                if data:
                    try:
                        sock.sendall(data)
                    except OSError:
                        pass  # closed under us: the read below tells how
            try:
                data = sock.recv(65536)
                if not data:
                    return True, time.monotonic() - t0, got
                got += data
            except socket.timeout:
                continue
            except OSError:
                return True, time.monotonic() - t0, got
        return False, time.monotonic() - t0, got

    @staticmethod
    def answer(got):
        """(status, code) of the first response in `got`, if one is there."""
        end = got.find(b"\r\n\r\n")
        if end < 0:
            return None, None
        try:
            status, _ = parse_head(bytes(got[:end + 4]))
        except ProtocolError:
            return None, None
        code = None
        body = bytes(got[end + 4:])
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            pass
        return status, code

    # -- the kinds ----------------------------------------------------------

    def slowloris_head(self):
        t0 = time.monotonic()
        try:
            s = tls_connect(self.ctx, self.addr, 10)
        except OSError as e:
            return self.record("connect_failed", t0, detail=f"slowloris_head: {e}")
        head = iter(b"GET /s/slow HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 4000)
        closed, took, got = self.watch(s, self.t["request_head"] + GIVE_UP,
                                       feed=lambda: bytes([next(head, 97)]), every=0.3)
        status, code = self.answer(got)
        self.record("slowloris_head", t0, closed=closed, closed_after=round(took, 3), status=status, code=code)
        s.close()

    def slowloris_body(self):
        t0 = time.monotonic()
        try:
            s = tls_connect(self.ctx, self.addr, 10)
            s.sendall(b"POST /s/slowbody HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n")
        except OSError as e:
            return self.record("connect_failed", t0, detail=f"slowloris_body: {e}")
        closed, took, got = self.watch(s, self.t["request_body"] + GIVE_UP, feed=lambda: b"x" * 16, every=0.5)
        status, code = self.answer(got)
        self.record("slowloris_body", t0, closed=closed, closed_after=round(took, 3), status=status, code=code)
        s.close()

    def many_until_closed(self, socks, kind_of, limit):
        """Waits for the gateway to close every socket in `socks` ({sock: t
        opened}); records each."""
        seen = {s: bytearray() for s in socks}
        left = dict(socks)
        start = time.monotonic()
        while left and time.monotonic() - start < limit:
            ready, _, _ = select.select(list(left), [], [], 0.5)
            for s in ready:
                try:
                    data = s.recv(65536)
                except (OSError, ValueError):
                    data = b""
                if data:
                    seen[s] += data
                    continue
                status, code = self.answer(seen[s])
                self.record(kind_of[s], left[s], closed=True, closed_after=round(time.monotonic() - left[s], 3),
                            status=status, code=code)
                del left[s]
                s.close()
        for s, t in left.items():
            status, code = self.answer(seen[s])
            self.record(kind_of[s], t, closed=False, closed_after=None, status=status, code=code)
            abort(s)

    def idle_tls_flood(self, n=40):
        socks, kinds = {}, {}
        for _ in range(n):
            t0 = time.monotonic()
            try:
                s = tls_connect(self.ctx, self.addr, 10)
            except OSError as e:
                self.record("connect_failed", t0, detail=f"idle_tls: {e}")
                continue
            socks[s], kinds[s] = time.monotonic(), "idle_tls"
        # A quarter leave with a reset before the gateway acts.
        quitters = list(socks)[: n // 4]
        time.sleep(1.0)
        for s in quitters:
            self.record("idle_tls_reset", socks.pop(s), closed=True)
            abort(s)
        self.many_until_closed(socks, kinds, self.t["request_head"] + GIVE_UP)

    def silent_flood(self, n=30):
        socks, kinds = {}, {}
        for i in range(n):
            try:
                s = socket.create_connection(self.addr, timeout=5)
            except OSError as e:
                self.record("connect_failed", time.monotonic(), detail=f"silent: {e}")
                continue
            s.setblocking(False)
            if i % 3 == 0:
                # The first bytes of a TLS record that never completes.
                try:
                    s.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20))
                except OSError:
                    pass
                kinds[s] = "partial_hello"
            else:
                kinds[s] = "silent_tcp"
            socks[s] = time.monotonic()
        self.many_until_closed(socks, kinds, self.t["handshake"] + GIVE_UP)

    GARBAGE_HTTP = [
        (b"GARBAGE\r\n\r\n", "garbage_http"),
        (b"\x00\xff\xfe\xfd garbage\r\n\r\n", "garbage_http"),
        (b"GET /s/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12abc\r\n\r\n", "garbage_http"),
        (b"POST /s/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "smuggle"),
    ]

    def garbage(self, rng):
        t0 = time.monotonic()
        if rng.random() < 0.3:
            try:
                s = socket.create_connection(self.addr, timeout=5)
                s.sendall(rng.randbytes(2000).replace(b"\x16", b"\x17"))
            except OSError as e:
                return self.record("connect_failed", t0, detail=f"garbage_tcp: {e}")
            closed, took, _ = self.watch(s, self.t["handshake"] + GIVE_UP)
            self.record("garbage_tcp", t0, closed=closed, closed_after=round(took, 3))
            s.close()
            return
        data, kind = rng.choice(self.GARBAGE_HTTP)
        try:
            s = tls_connect(self.ctx, self.addr, 10)
            s.sendall(data)
        except OSError as e:
            return self.record("connect_failed", t0, detail=f"{kind}: {e}")
        closed, took, got = self.watch(s, GIVE_UP)
        status, code = self.answer(got)
        self.record(kind, t0, closed=closed, closed_after=round(took, 3), status=status, code=code)
        s.close()

    def never_read(self, hold):
        """Asks for 256 MiB and never reads. After `hold` s (past the send
        timeout) it drains: a gateway that dropped the connection delivers
        only what was already in flight, then the end."""
        t0 = time.monotonic()
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        try:
            raw.settimeout(10)
            raw.connect(self.addr)
            s = self.ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
            s.sendall(b"GET /s/big HTTP/1.1\r\nHost: localhost\r\nx-echo-bytes: 268435456\r\n\r\n")
        except OSError as e:
            raw.close()
            return self.record("connect_failed", t0, detail=f"never_read: {e}")
        sent = time.monotonic()
        self.sleep(hold)
        if time.monotonic() - sent < hold:
            # The soak ended first: the gateway's send timeout may not have run out.
            abort(s)
            return self.record("never_read_cut", t0, closed=False)
        limit = 32 << 20
        drained, closed = 0, False
        s.settimeout(3.0)
        while drained <= limit:
            try:
                data = s.recv(1 << 20)
            except socket.timeout:
                break  # nothing more is coming and no end either: not closed
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            drained += len(data)
        self.record("never_read", t0, closed=closed, drained=drained, drain_limit=limit)
        abort(s)

    def reset_mid_transfer(self, rng):
        t0 = time.monotonic()
        try:
            s = tls_connect(self.ctx, self.addr, 10)
            if rng.random() < 0.5:
                s.sendall(b"POST /s/up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n")
                s.sendall(bytes(rng.randint(1, 256 * 1024)))
                kind = "reset_upload"
            else:
                s.sendall(b"GET /s/dl HTTP/1.1\r\nHost: localhost\r\nx-echo-bytes: 4194304\r\n\r\n")
                want, got = rng.randint(1, 512 * 1024), 0
                s.settimeout(10)
                while got < want:
                    data = s.recv(65536)
                    if not data:
                        break
                    got += len(data)
                kind = "reset_download"
        except OSError as e:
            return self.record("connect_failed", t0, detail=f"reset: {e}")
        abort(s)
        self.record(kind, t0, closed=True)

    # -- loops ----------------------------------------------------------------

    def loop(self, name, action, pause):
        rng = self.rand()
        while not self.stop():
            try:
                action(rng)
            except Exception as e:  # a hostile client's own bug must not stop the soak
                self.record("client_error", time.monotonic(), detail=f"{name}: {type(e).__name__}: {e}"[:300])
            self.sleep(pause(rng))

    def run(self):
        send_hold = self.t["send"] + 10.0
        loops = [
            ("slowloris_head", lambda r: self.slowloris_head(), lambda r: r.uniform(0, 1)),
            ("slowloris_head", lambda r: self.slowloris_head(), lambda r: r.uniform(0, 1)),
            ("slowloris_body", lambda r: self.slowloris_body(), lambda r: r.uniform(0, 1)),
            ("slowloris_body", lambda r: self.slowloris_body(), lambda r: r.uniform(0, 1)),
            ("idle_tls", lambda r: self.idle_tls_flood(), lambda r: r.uniform(20, 40)),
            ("silent", lambda r: self.silent_flood(), lambda r: r.uniform(10, 30)),
            ("garbage", self.garbage, lambda r: r.uniform(0.5, 1.5)),
            ("never_read", lambda r: self.never_read(send_hold), lambda r: r.uniform(0, 2)),
            ("never_read", lambda r: self.never_read(send_hold), lambda r: r.uniform(0, 2)),
            ("reset", self.reset_mid_transfer, lambda r: r.uniform(0.2, 0.8)),
        ]
        threads = [threading.Thread(target=self.loop, args=loop, name=loop[0], daemon=True) for loop in loops]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.out.close()


def main():
    with open(sys.argv[1]) as f:
        Hostile(json.load(f)).run()


if __name__ == "__main__":
    main()
