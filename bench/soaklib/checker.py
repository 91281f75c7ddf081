"""Well-behaved clients that check every answer byte for byte.

Each thread is one client: keep-alive ("ka": one connection for as long as
the gateway keeps it), new-handshake ("nc": a full mTLS handshake per
request, `Connection: close`), or "fault" (keep-alive, asking for the faulty
backend's paths). Requests: GETs of N echo-pattern bytes (Content-Length or
chunked; byte i must be i % 251), JSON echoes (method, path, query checked),
POSTs with random bodies (Content-Length or chunked; the echo's body_bytes
and body_sha256 must match), HEADs, delayed answers.

Every request is written to the JSON-lines file with its interval (monotonic
clock), how far it got and how it ended; `expect.classify` judges it later
against the faults injected meanwhile. A request whose connection was refused
before the handshake completed was never sent: it is recorded (and judged)
and sent again on a new connection, so none is lost.

Run: python3 -m soaklib.checker PARAMS.json (see ../soak for the fields).
"""
import hashlib
import json
import random
import socket
import sys
import threading
import time

from .common import JsonLines, client_context, pattern_matches, stop_flag, tls_connect
from .wire import Ended, ProtocolError, Reader, end_kind, framing, header, parse_head

IO_TIMEOUT = 30.0  # past every gateway bound: a request still unanswered then is lost
MAX_REFUSED_RETRIES = 100

BYTE_SIZES = [0, 1, 1000, 16384, 65536, 262144, 1048576]
POST_SIZES = [0, 1, 1000, 65536, 262144]


def normal_request(rng, n):
    """One request of the everyday mix, on the killable echo ("e", 70 %)
    or the never-faulted one ("s")."""
    target = "e" if rng.random() < 0.7 else "s"
    p = f"/{target}"
    r = rng.random()
    if r < 0.28:
        return dict(kind="get_json", target=target, method="GET", path=f"{p}/json/{n}", query=f"q={n}")
    if r < 0.50:
        size = rng.choice(BYTE_SIZES)
        return dict(kind="get_bytes", target=target, method="GET", path=f"{p}/bytes/{n}", size=size,
                    headers=[("x-echo-bytes", str(size))])
    if r < 0.60:
        size = rng.choice(BYTE_SIZES)
        return dict(kind="get_bytes_chunked", target=target, method="GET", path=f"{p}/chunked/{n}", size=size,
                    headers=[("x-echo-bytes", str(size)), ("x-echo-chunked", "1")])
    if r < 0.65:
        return dict(kind="head_bytes", target=target, method="HEAD", path=f"{p}/head/{n}", size=1000,
                    headers=[("x-echo-bytes", "1000")])
    if r < 0.80:
        size = rng.choice(POST_SIZES)
        return dict(kind="post_cl", target=target, method="POST", path=f"{p}/up/{n}", body=rng.randbytes(size))
    if r < 0.93:
        size = rng.choice(POST_SIZES)
        return dict(kind="post_chunked", target=target, method="POST", path=f"{p}/upc/{n}", body=rng.randbytes(size),
                    chunked=True)
    delay = rng.randint(50, 400)
    return dict(kind="get_delay", target=target, method="GET", path=f"{p}/delay/{n}", query=f"d={delay}",
                headers=[("x-echo-delay-ms", str(delay))])


FAULT_MENU = [
    # (kind, weight, path, size for the good paths)
    ("f_ok", 30, "/f/ok", 5000),
    ("f_slowhead", 4, "/f/slowhead", 1000),
    ("f_trickle", 4, "/f/trickle", 20000),
    ("f_extra", 8, "/f/extra", 10),
    ("f_hang", 3, "/f/hang", None),
    ("f_garbage", 8, "/f/garbage", None),
    ("f_badcl", 5, "/f/badcl", None),
    ("f_close", 8, "/f/close", None),
    ("f_reset", 8, "/f/reset", None),
    ("f_truncate", 6, "/f/truncate", None),
    ("f_stall", 3, "/f/stall", None),
    ("f_chunkgarbage", 5, "/f/chunkgarbage", None),
    ("n_connect", 3, "/n/connect", None),
]


def fault_request(rng, n):
    kinds = [m[0] for m in FAULT_MENU]
    weights = [m[1] for m in FAULT_MENU]
    kind = rng.choices(kinds, weights)[0]
    _, _, path, size = next(m for m in FAULT_MENU if m[0] == kind)
    req = dict(kind=kind, target=path[1], method="GET", path=f"{path}/{n}")
    if kind in ("f_ok", "f_slowhead"):
        req["headers"] = [("x-len", str(size))]
    if size is not None:
        req["size"] = size
    if kind in ("f_truncate", "f_stall", "f_chunkgarbage"):
        req["size"] = 100000
    return req


class Client:
    """One client thread's connection and its request loop."""

    def __init__(self, name, mode, addr, ctx, out, stop, seed, pace):
        self.name, self.mode, self.addr, self.ctx = name, mode, addr, ctx
        self.out, self.stop = out, stop
        self.rng = random.Random(seed)
        self.pace = pace
        self.sock = None
        self.reader = None
        self.n = 0
        self.counts = {}

    def run(self):
        try:
            while not self.stop():
                self.n += 1
                req = (fault_request if self.mode == "fault" else normal_request)(self.rng, self.n)
                for _ in range(MAX_REFUSED_RETRIES):
                    rec = self.exchange(req)
                    self.out.write(rec)
                    self.counts[rec["end"]] = self.counts.get(rec["end"], 0) + 1
                    refused = rec["fresh"] and rec["phase"] in ("connect", "handshake")
                    if not refused or self.stop():
                        break
                    time.sleep(0.1)  # never sent: send it again on a new connection
                time.sleep(self.rng.uniform(*self.pace))
        finally:
            self.drop()

    def drop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.reader = None

    def exchange(self, req):
        rec = dict(id=f"{self.name}-{self.n}", proc=self.mode, kind=req["kind"], target=req["target"],
                   method=req["method"], path=req["path"] + (f"?{req['query']}" if req.get("query") else ""),
                   size=req.get("size", len(req.get("body") or b"")), fresh=False, phase="connect",
                   status=None, code=None, end=None, bytes=0, body_ok=None, prefix_ok=None, detail="")
        rec["t0"] = time.monotonic()
        try:
            self._exchange(req, rec)
            rec["end"] = "complete"
        except Ended as e:
            rec["end"], rec["detail"] = "eof_clean", str(e)
            self.drop()
        except (OSError, ProtocolError, ValueError) as e:
            rec["end"] = end_kind(e)
            rec["detail"] = f"{type(e).__name__}: {e}"[:300]
            self.drop()
        rec["t1"] = time.monotonic()
        rec.pop("_close", None)
        return rec

    def _exchange(self, req, rec):
        keep = self.mode != "nc"
        if self.sock is None:
            rec["fresh"] = True
            rec["phase"] = "handshake"
            self.sock = tls_connect(self.ctx, self.addr, IO_TIMEOUT)
            self.sock.settimeout(IO_TIMEOUT)
            self.reader = Reader(self.sock)
        rec["phase"] = "send"
        body = req.get("body")
        head = [f"{req['method']} {rec['path']} HTTP/1.1", "Host: localhost", "User-Agent: soak-checker"]
        head += [f"{k}: {v}" for k, v in req.get("headers", [])]
        if body is not None:
            head.append("Transfer-Encoding: chunked" if req.get("chunked") else f"Content-Length: {len(body)}")
        if not keep:
            head.append("Connection: close")
        try:
            self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            if body is not None:
                self._send_body(body, req.get("chunked"))
        except OSError as e:
            # The gateway may have answered early (a backend error) and closed:
            # read what it said before reporting the send as failed.
            rec["detail"] = f"send failed: {type(e).__name__}: {e}"[:300]
            try:
                self.sock.settimeout(2.0)
                self._read_response(req, rec)
            except (OSError, ProtocolError, ValueError, Ended):
                raise e
            self.drop()
            return
        self._read_response(req, rec)
        if not keep or rec.get("_close"):
            self.drop()

    def _bytes_after_head(self, closing):
        """Bytes that follow a HEAD response's head: there must be none. On
        a closing connection, everything up to the end; on a kept one, what
        arrives within 50 ms (a stray body is sent at once)."""
        extra = len(self.reader.buf)
        self.reader.buf.clear()
        self.sock.settimeout(2.0 if closing else 0.05)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                extra += len(data)
        except (socket.timeout, TimeoutError):
            pass
        except OSError:
            pass  # reset or unclean end after a complete response: nothing more came
        self.sock.settimeout(IO_TIMEOUT)
        return extra

    def _send_body(self, body, chunked):
        if not chunked:
            for i in range(0, len(body), 65536):
                self.sock.sendall(body[i:i + 65536])
            return
        pos = 0
        while pos < len(body):
            n = min(len(body) - pos, self.rng.choice([1, 100, 4096, 30000, 70000]))
            self.sock.sendall(b"%x\r\n" % n + body[pos:pos + n] + b"\r\n")
            pos += n
        self.sock.sendall(b"0\r\n\r\n")

    def _read_response(self, req, rec):
        rec["phase"] = "head"
        status, headers = parse_head(self.reader.head())
        while 100 <= status < 200:  # interim responses: the real one follows
            status, headers = parse_head(self.reader.head())
        rec["status"] = status
        is_head = req["method"] == "HEAD"
        kind, length = framing(status, headers, is_head)
        rec["phase"] = "body"
        # Requests with a "size" ask for that many pattern bytes (or, for the
        # truncating faults, start a pattern body that will be cut short).
        pattern = status == 200 and "size" in req and not is_head
        state = {"ok": True, "json": bytearray()}

        def sink(offset, data):
            rec["bytes"] = offset + len(data)
            if pattern:
                if state["ok"] and not pattern_matches(offset, data):
                    state["ok"] = False
                rec["prefix_ok"] = state["ok"]
            elif len(state["json"]) < (1 << 20):
                state["json"] += data

        self.reader.body(kind, length, sink)
        rec["phase"] = "done"
        conn = (header(headers, "connection") or "").lower()
        rec["_close"] = conn == "close" or kind == "close"
        if is_head:
            rec["head_extra"] = self._bytes_after_head(rec["_close"])
        if status != 200:
            rec["code"] = _error_code(state["json"])
            rec["body_ok"] = False
            return
        if is_head:
            # The gateway may leave out a HEAD response's Content-Length;
            # when it sends one it must be the GET's.
            cl = header(headers, "content-length")
            rec["body_ok"] = cl in (None, str(req["size"])) and rec["head_extra"] == 0
            if not rec["body_ok"]:
                rec["detail"] = f"HEAD: content-length {cl}, {rec['head_extra']} bytes after the head"
        elif pattern:
            rec["body_ok"] = state["ok"] and rec["bytes"] == req["size"]
            if not rec["body_ok"]:
                rec["detail"] = f"pattern {'ok' if state['ok'] else 'WRONG'}, {rec['bytes']} of {req['size']} bytes"
        else:
            rec["body_ok"], why = _check_echo_json(bytes(state["json"]), req, rec["path"])
            if not rec["body_ok"]:
                rec["detail"] = why


def _error_code(body):
    try:
        return json.loads(bytes(body))["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _check_echo_json(raw, req, full_path):
    try:
        j = json.loads(raw)
    except ValueError:
        return False, f"not JSON: {raw[:80]!r}"
    path, _, query = full_path.partition("?")
    want = {"method": req["method"], "path": path, "query": query or None}
    body = req.get("body") or b""
    want["body_bytes"] = len(body)
    want["body_sha256"] = hashlib.sha256(body).hexdigest()
    for k, v in want.items():
        if j.get(k) != v:
            return False, f"echo JSON {k} = {str(j.get(k))[:80]!r}, want {str(v)[:80]!r}"
    return True, ""


def main():
    with open(sys.argv[1]) as f:
        p = json.load(f)
    ctx = client_context(p["pki"])
    out = JsonLines(p["out"])
    stop = stop_flag(p["stop_file"])
    addr = ("127.0.0.1", p["gateway_port"])
    clients = []
    plan = [("ka", p.get("keepalive", 3), (0.0, 0.04)),
            ("nc", p.get("newconn", 2), (0.05, 0.15)),
            ("fault", p.get("fault", 2), (0.0, 0.2))]
    for mode, count, pace in plan:
        for i in range(count):
            clients.append(Client(f"{mode}{i}", mode, addr, ctx, out, stop, p["seed"] * 1000 + len(clients), pace))
    threads = [threading.Thread(target=c.run, name=c.name) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {c.name: {"requests": c.n, "ends": c.counts} for c in clients}
    print(json.dumps({"checker": summary}), flush=True)
    out.close()


if __name__ == "__main__":
    main()
