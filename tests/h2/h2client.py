#!/usr/bin/env python3
"""A raw-frame HTTP/2 client for tests/http2.rs: normal requests and the
abuse patterns real servers learned to survive, each sent over real TLS
(with the test PKI's client certificate) to a real gateway.

Frames are built with `hyperframe` and heads with `hpack` (PyPI's h2
project), never through a validating connection object, so the client can
send what a well-behaved library refuses to. It prints one JSON object:
what came back (statuses and bodies per stream, RST_STREAM codes, GOAWAY,
whether the server closed), and the test judges it.

usage: h2client.py SCENARIO --port P --certs DIR [--n N] [--authority A]
       [--path P] [--header k:v ...] [--no-cert] [--alpn h2,...]
"""

import argparse
import json
import socket
import ssl
import sys
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Conn:
    def __init__(self, args, alpn=("h2",), cert=True, settings=None):
        ctx = ssl.create_default_context(cafile=f"{args.certs}/ca.pem")
        if cert:
            ctx.load_cert_chain(f"{args.certs}/client.pem", f"{args.certs}/client.key")
        ctx.set_alpn_protocols(list(alpn))
        raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.alpn = self.sock.selected_alpn_protocol()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_allowed_table_size = 65536
        self.buf = b""
        self.out = {
            "alpn": self.alpn,
            "status": {},
            "body": {},
            "headers": {},
            "rst": {},
            "goaway": None,
            "closed": False,
            "ended": [],
            "window_updates": 0,
            "settings": 0,
            "ping_acks": 0,
        }
        self.send(PREFACE)
        s = SettingsFrame(0)
        if settings:
            s.settings = settings
        self.send(s.serialize())

    def send(self, data):
        self.sock.sendall(data)

    def headers(self, sid, path="/", method="GET", authority="localhost", extra=(), end_stream=True):
        fields = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]
        fields += list(extra)
        block = self.enc.encode(fields)
        # Frames of at most the default SETTINGS_MAX_FRAME_SIZE: a big
        # header block goes on in CONTINUATION frames, as a real client sends it.
        pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)] or [b""]
        f = HeadersFrame(sid)
        f.data = pieces[0]
        if end_stream:
            f.flags.add("END_STREAM")
        frames = [f]
        for piece in pieces[1:]:
            cf = ContinuationFrame(sid)
            cf.data = piece
            frames.append(cf)
        frames[-1].flags.add("END_HEADERS")
        self.send(b"".join(fr.serialize() for fr in frames))

    def data(self, sid, payload, end_stream=False):
        f = DataFrame(sid)
        f.data = payload
        if end_stream:
            f.flags.add("END_STREAM")
        self.send(f.serialize())

    def read_frames(self, until, timeout=10.0):
        """Reads and records frames until `until(out)` holds, the server
        closes, or `timeout` passes."""
        deadline = time.time() + timeout
        while not until(self.out):
            left = deadline - time.time()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return False
            except (ConnectionError, ssl.SSLError, OSError) as e:
                self.out["closed"] = True
                self.out["error"] = str(e)
                return until(self.out)
            if not chunk:
                self.out["closed"] = True
                return until(self.out)
            self.buf += chunk
            self._parse()
        return True

    def _parse(self):
        while len(self.buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            f.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            self._record(f)

    def _record(self, f):
        o = self.out
        sid = str(f.stream_id)
        if isinstance(f, HeadersFrame) or isinstance(f, ContinuationFrame):
            fields = self.dec.decode(f.data)
            hs = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in fields}
            if ":status" in hs:
                code = int(hs[":status"])
                if 100 <= code < 200:
                    # Interim (100 Continue): kept apart from the final status.
                    o.setdefault("interim", {}).setdefault(sid, []).append(code)
                else:
                    o["status"][sid] = code
                    o["headers"][sid] = hs
            if "END_STREAM" in f.flags:
                o["ended"].append(f.stream_id)
        elif isinstance(f, DataFrame):
            o["body"].setdefault(sid, "")
            o["body"][sid] += f.data.decode("latin-1")
            if f.data:
                # Keep the windows open: a reading client.
                if not getattr(self, "never_read", False):
                    w = WindowUpdateFrame(0)
                    w.window_increment = len(f.data)
                    self.send(w.serialize())
                    w = WindowUpdateFrame(f.stream_id)
                    w.window_increment = len(f.data)
                    try:
                        self.send(w.serialize())
                    except OSError:
                        pass
            if "END_STREAM" in f.flags:
                o["ended"].append(f.stream_id)
        elif isinstance(f, RstStreamFrame):
            o["rst"][sid] = f.error_code
        elif isinstance(f, GoAwayFrame):
            o["goaway"] = {"code": f.error_code, "last": f.last_stream_id}
        elif isinstance(f, SettingsFrame):
            if "ACK" not in f.flags:
                o["settings"] += 1
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                try:
                    self.send(ack.serialize())
                except OSError:
                    pass
        elif isinstance(f, PingFrame):
            if "ACK" in f.flags:
                o["ping_acks"] += 1
        elif isinstance(f, WindowUpdateFrame):
            o["window_updates"] += 1


def done(sids):
    return lambda o: all(s in o["ended"] or str(s) in o["rst"] for s in sids) or o["closed"] or o["goaway"] is not None and o["goaway"]["code"] != 0


def blast(c, frames):
    """Sends many frames fast; a server that closes stops us (recorded)."""
    sent = 0
    try:
        for f in frames:
            c.send(f)
            sent += 1
    except (ConnectionError, ssl.SSLError, OSError) as e:
        c.out["write_error"] = str(e)
    c.out["sent"] = sent


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--certs", required=True)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--authority", default="localhost")
    p.add_argument("--path", default="/")
    p.add_argument("--method", default="GET")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--body-bytes", type=int, default=0)
    p.add_argument("--no-cert", action="store_true")
    p.add_argument("--alpn", default="h2")
    p.add_argument("--wait", type=float, default=10.0)
    a = p.parse_args()
    extra = [tuple(h.split(":", 1)) for h in a.header]
    sc = a.scenario

    if sc == "handshake":
        # Only the TLS handshake and ALPN (no HTTP/2 unless h2 was chosen).
        try:
            c = Conn(a, alpn=a.alpn.split(","), cert=not a.no_cert)
            out = {"alpn": c.alpn}
            if c.alpn == "h2":
                c.headers(1, a.path, authority=a.authority)
                c.read_frames(done([1]), a.wait)
                out.update(c.out)
        except (ssl.SSLError, ConnectionError, OSError) as e:
            out = {"handshake_error": str(e)}
        print(json.dumps(out))
        return

    if sc == "get":
        # n requests, all at once, each on its own stream.
        c = Conn(a)
        sids = [1 + 2 * i for i in range(a.n)]
        body = b"x" * a.body_bytes
        for sid in sids:
            c.headers(sid, a.path, method=a.method, authority=a.authority, extra=extra, end_stream=not body)
            if body:
                c.data(sid, body, end_stream=True)
        c.read_frames(done(sids), a.wait)

    elif sc == "body-stall":
        # Announces a body and sends none of it: the body clock must answer.
        c = Conn(a)
        c.headers(1, a.path, method="POST", authority=a.authority, extra=[("content-length", "10")], end_stream=False)
        c.read_frames(done([1]), a.wait)

    elif sc == "rapid-reset":
        # CVE-2023-44487: open a stream and cancel it at once, again and again.
        c = Conn(a)
        frames = []
        for i in range(a.n):
            sid = 1 + 2 * i
            h = HeadersFrame(sid)
            h.data = c.enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", a.authority), (":path", a.path)])
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            r = RstStreamFrame(sid)
            r.error_code = 8  # CANCEL
            frames += [h.serialize(), r.serialize()]
        blast(c, frames)
        c.read_frames(lambda o: o["goaway"] is not None or o["closed"], a.wait)

    elif sc == "continuation":
        # HEADERS without END_HEADERS, then CONTINUATION frames forever.
        c = Conn(a)
        h = HeadersFrame(1)
        h.data = c.enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", a.authority), (":path", "/")])
        frames = [h.serialize()]
        for i in range(a.n):
            cf = ContinuationFrame(1)
            cf.data = c.enc.encode([(f"x-flood-{i}", "y" * 100)])
            frames.append(cf.serialize())
        blast(c, frames)
        c.read_frames(lambda o: o["goaway"] is not None or o["closed"] or "1" in o["rst"] or "1" in o["status"], a.wait)

    elif sc == "hpack-bomb":
        # One big value in the dynamic table, referenced n times: a few bytes
        # on the wire decode to n times its size.
        c = Conn(a)
        big = "b" * 4000
        fields = [(":method", "GET"), (":scheme", "https"), (":authority", a.authority), (":path", "/")]
        fields += [("x-bomb", big)] * a.n
        h = HeadersFrame(1)
        h.data = c.enc.encode(fields)
        h.flags.add("END_HEADERS")
        h.flags.add("END_STREAM")
        c.out["wire_bytes"] = len(h.data)
        blast(c, [h.serialize()])
        c.read_frames(lambda o: o["goaway"] is not None or o["closed"] or "1" in o["rst"] or "1" in o["status"], a.wait)

    elif sc in ("settings-flood", "ping-flood", "empty-data-flood"):
        c = Conn(a)
        frames = []
        if sc == "empty-data-flood":
            c.headers(1, "/", method="POST", authority=a.authority, end_stream=False)
        for i in range(a.n):
            if sc == "settings-flood":
                s = SettingsFrame(0)
                s.settings = {SettingsFrame.MAX_CONCURRENT_STREAMS: 100}
                frames.append(s.serialize())
            elif sc == "ping-flood":
                pf = PingFrame(0)
                pf.opaque_data = i.to_bytes(8, "big")
                frames.append(pf.serialize())
            else:
                frames.append(DataFrame(1).serialize())
        # The flood is sent without reading what comes back.
        blast(c, frames)
        c.read_frames(lambda o: o["goaway"] is not None or o["closed"], a.wait)

    elif sc == "window-overflow":
        # WINDOW_UPDATEs that push the connection window past 2^31-1.
        c = Conn(a)
        frames = []
        for _ in range(3):
            w = WindowUpdateFrame(0)
            w.window_increment = 2**31 - 1
            frames.append(w.serialize())
        # In one write, as a client's frames coalesce (the gateway now
        # lingers on an HTTP/2 close, so later writes would meet a socket
        # still reading, not a reset: see the error-then-more scenario).
        blast(c, [b"".join(frames)])
        c.read_frames(lambda o: o["goaway"] is not None or o["closed"], a.wait)

    elif sc == "expect-continue":
        # POST with `expect: 100-continue` and the body held back until the
        # server says 100 (or --wait passes): then the body, then the answer.
        c = Conn(a)
        body = b"x" * a.body_bytes
        fields = [("content-length", str(len(body))), ("expect", "100-continue")] + extra
        t0 = time.time()
        c.headers(1, a.path, method="POST", authority=a.authority, extra=fields, end_stream=False)
        c.read_frames(lambda o: "1" in o.get("interim", {}) or "1" in o["status"] or "1" in o["rst"] or o["closed"], a.wait)
        c.out["continue_after"] = time.time() - t0
        if "1" not in c.out["status"] and "1" not in c.out["rst"] and not c.out["closed"]:
            c.data(1, body, end_stream=True)
        c.read_frames(done([1]), 10)

    elif sc == "error-then-more":
        # A connection error (PING on stream 1: PROTOCOL_ERROR), then more
        # frames in separate writes while reading nothing, as a client with
        # requests queued does; only then read. The server's GOAWAY must
        # survive its close: a server that closes with our later bytes
        # unread sends a reset, and the reset destroys the GOAWAY.
        c = Conn(a)
        c.read_frames(lambda o: o["settings"] > 0, 5)
        bad = (8).to_bytes(3, "big") + bytes([0x6, 0x0]) + (1).to_bytes(4, "big") + b"\0" * 8
        blast(c, [bad])
        frames = []
        for i in range(a.n):
            pf = PingFrame(0)
            pf.opaque_data = i.to_bytes(8, "big")
            frames.append(pf.serialize())
        sent = 0
        try:
            for f in frames:
                # Spread out, so some arrive after the server has answered.
                time.sleep(0.005)
                c.send(f)
                sent += 1
        except (ConnectionError, ssl.SSLError, OSError) as e:
            c.out["write_error"] = str(e)
        c.out["sent"] = sent
        c.read_frames(lambda o: o["goaway"] is not None, a.wait)
        # Then the end: a clean one (close_notify, FIN) or a reset ("error").
        c.read_frames(lambda o: o["closed"], a.wait)

    elif sc == "stream-window-overflow":
        c = Conn(a)
        c.headers(1, a.path, authority=a.authority, extra=extra)
        w = WindowUpdateFrame(1)
        w.window_increment = 2**31 - 1
        blast(c, [w.serialize() + w.serialize()])  # one write, as above
        c.read_frames(lambda o: "1" in o["rst"] or o["goaway"] is not None or o["closed"], a.wait)

    elif sc == "never-read":
        # Stream windows of 0: the server may send headers, no DATA, ever.
        c = Conn(a, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        c.never_read = True
        sids = [1 + 2 * i for i in range(a.n)]
        for sid in sids:
            c.headers(sid, a.path, authority=a.authority, extra=extra)
        c.read_frames(lambda o: all(str(s) in o["rst"] for s in sids) or o["closed"], a.wait)

    elif sc == "too-many-streams":
        # n streams at once against max_concurrent_streams (slow responses).
        c = Conn(a)
        sids = [1 + 2 * i for i in range(a.n)]
        for sid in sids:
            c.headers(sid, a.path, authority=a.authority, extra=extra)
        c.read_frames(done(sids), a.wait)

    elif sc == "hold":
        # Stream 1, then --wait seconds of quiet on the same connection,
        # then stream 3: both on the generation the connection began with.
        c = Conn(a)
        c.headers(1, a.path, authority=a.authority, extra=extra)
        c.read_frames(done([1]), 10)
        time.sleep(a.wait)
        c.headers(3, a.path, authority=a.authority, extra=extra)
        c.read_frames(done([3]), 10)

    elif sc == "idle":
        # A connection that asks for nothing: GOAWAY after the idle timeout.
        c = Conn(a)
        t0 = time.time()
        c.read_frames(lambda o: o["goaway"] is not None or o["closed"], a.wait)
        c.out["after"] = time.time() - t0

    elif sc == "no-preface":
        # TLS with ALPN h2, then silence: closed after the handshake timeout.
        ctx = ssl.create_default_context(cafile=f"{a.certs}/ca.pem")
        ctx.load_cert_chain(f"{a.certs}/client.pem", f"{a.certs}/client.key")
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        t0 = time.time()
        s.settimeout(a.wait)
        closed = False
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    closed = True
                    break
        except (socket.timeout, TimeoutError):
            pass
        except (ConnectionError, ssl.SSLError, OSError):
            closed = True
        print(json.dumps({"alpn": s.selected_alpn_protocol(), "closed": closed, "after": time.time() - t0}))
        return

    elif sc == "drain":
        # A stream in flight (a slow response), then the test signals the
        # gateway: we must see GOAWAY, and the stream still completes.
        c = Conn(a)
        c.read_frames(lambda o: o["settings"] > 0, 5)
        c.headers(1, a.path, authority=a.authority, extra=extra)
        print(json.dumps({"ready": True}), flush=True)
        c.read_frames(lambda o: o["goaway"] is not None and (1 in o["ended"] or "1" in o["rst"] or o["closed"]), a.wait)
        c.read_frames(lambda o: o["closed"], 5)

    else:
        print(f"unknown scenario {sc}", file=sys.stderr)
        sys.exit(2)

    # Is the connection still usable? (A server that shut it says no.)
    print(json.dumps(c.out))


if __name__ == "__main__":
    main()
