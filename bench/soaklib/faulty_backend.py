"""A deliberately broken plain-HTTP/1.1 backend for the soak.

The path after /f/ picks the misbehaviour, so the checker knows exactly what
the gateway must turn each one into (see expect.FAULT_PATHS):

  ok         200, `x-len` bytes of the echo pattern (default 1000), keep-alive
  slowhead   the same after 1 s
  trickle    200, 20000 bytes sent 1000 at a time every 100 ms
  extra      200 with Content-Length 10, then a whole second response nobody
             asked for (a pool that reused this connection would hand it to
             the next client: the checker would see "WRONG")
  hang       reads the request, never answers           -> 504 PCS.5040
  garbage    answers bytes that are not HTTP            -> 502 PCS.5022
  badcl      Content-Length: 12abc                      -> 502 PCS.5022
  close      closes without answering                   -> 502 PCS.5021
  reset      resets without answering                   -> 502 PCS.5021
  truncate   200, Content-Length 100000, 40000 bytes, FIN  -> aborted response
  stall      200, Content-Length 100000, 40000 bytes, silence -> aborted response
  chunkgarbage  200 chunked, one chunk, then a bad size line -> aborted response

`--noaccept-port` also opens a listener that never accepts and whose accept
queue is kept full, so the kernel drops every new SYN: a backend that cannot
be connected to in time (504 PCS.5041).

Run: python3 -m soaklib.faulty_backend --port P --noaccept-port Q
"""
import argparse
import signal
import socket
import sys
import threading
import time

from .common import abort, pattern_at
from .wire import Chunked, ProtocolError

HOLD_MAX = 120.0  # a hanging connection is released after this, whatever the gateway does


def read_request(sock, buf):
    """Reads one request (head and body) from `buf` + the socket.
    Returns (path, headers dict, leftover bytes) or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
        if len(buf) > 65536:
            raise ProtocolError("request head too large")
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    parts = head[0].split(" ")
    path = parts[1] if len(parts) > 1 else "/"
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        left = int(headers["content-length"])
        while left > 0:
            if not buf:
                data = sock.recv(65536)
                if not data:
                    return None
                buf += data
            n = min(left, len(buf))
            del buf[:n]
            left -= n
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        dec = Chunked()
        while True:
            _, used = dec.feed(buf)
            del buf[:used]
            if dec.done:
                break
            data = sock.recv(65536)
            if not data:
                return None
            buf += data
    return path, headers, buf


def hold(sock):
    """Keeps a connection open, reading and discarding, until the peer
    closes it (or HOLD_MAX passes)."""
    sock.settimeout(1.0)
    until = time.monotonic() + HOLD_MAX
    while time.monotonic() < until:
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue
        except OSError:
            return


def ok_response(n, close=False):
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + pattern_at(0, n)


def serve(sock, counts, lock):
    buf = bytearray()
    try:
        while True:
            req = read_request(sock, buf)
            if req is None:
                return
            path, headers, buf = req
            # /f/<what>/<n>: the segment after /f/ picks the behaviour.
            segments = path.split("?")[0].split("/")
            what = segments[2] if len(segments) > 2 else ""
            with lock:
                counts[what] = counts.get(what, 0) + 1
            if what == "ok":
                sock.sendall(ok_response(int(headers.get("x-len", "1000"))))
            elif what == "slowhead":
                time.sleep(1.0)
                sock.sendall(ok_response(int(headers.get("x-len", "1000"))))
            elif what == "trickle":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n")
                for i in range(20):
                    time.sleep(0.1)
                    sock.sendall(pattern_at(i * 1000, 1000))
            elif what == "extra":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + pattern_at(0, 10)
                             + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG")
            elif what == "hang":
                hold(sock)
                return
            elif what == "garbage":
                sock.sendall(b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n")
                return
            elif what == "badcl":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello")
                return
            elif what == "close":
                return
            elif what == "reset":
                abort(sock)
                return
            elif what in ("truncate", "stall"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + pattern_at(0, 40000))
                if what == "stall":
                    hold(sock)
                return
            elif what == "chunkgarbage":
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"
                             + pattern_at(0, 1000) + b"\r\nzz\r\n")
                hold(sock)
                return
            else:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except (OSError, ProtocolError, ValueError):
        return
    finally:
        try:
            sock.close()
        except OSError:
            pass


def noaccept_listener(port):
    """A listener that never accepts, its accept queue filled by our own
    connections, so further SYNs are dropped (tcp_abort_on_overflow = 0)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(0)
    fillers = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.2)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
        print(f"faulty: WARNING noaccept port {port} accepted a connection; 5041 will not be seen",
              file=sys.stderr, flush=True)
    except OSError:
        pass
    finally:
        probe.close()
    return ls, fillers


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--noaccept-port", type=int)
    a = ap.parse_args()
    # SIGTERM from the orchestrator: print the counts on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    keep = noaccept_listener(a.noaccept_port) if a.noaccept_port else None
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(512)
    counts, lock = {}, threading.Lock()
    print(f"faulty backend listening on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
    try:
        while True:
            s, _ = ls.accept()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve, args=(s, counts, lock), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        print(f"faulty backend requests: {counts}", file=sys.stderr, flush=True)
        del keep


if __name__ == "__main__":
    main()
