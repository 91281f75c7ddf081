"""Things every soak process shares: the clock, the echo byte pattern, the
client TLS context, JSON-lines output and the child-process hygiene.

All processes stamp events with time.monotonic(): CLOCK_MONOTONIC is one
clock for the whole machine on Linux, so a request's interval in the checker
process and a fault's interval in the orchestrator can be compared directly.
"""
import ctypes
import json
import os
import signal
import socket
import ssl
import threading

# Byte i of an `x-echo-bytes` body is i % 251 (src/echo.rs). 251 * 4096 bytes:
# any slice of up to 251 * 4095 bytes starting at any phase is in here.
PERIOD = 251
PATTERN = bytes(i % PERIOD for i in range(PERIOD * 4096))
MAX_SLICE = PERIOD * 4095


def pattern_at(offset, length):
    """The `length` pattern bytes that start at body offset `offset`."""
    out = bytearray()
    while length > 0:
        n = min(length, MAX_SLICE)
        p = offset % PERIOD
        out += PATTERN[p:p + n]
        offset += n
        length -= n
    return bytes(out)


def pattern_matches(offset, data):
    """Whether `data` is the pattern from body offset `offset` (no copy for
    slices up to MAX_SLICE, which is every read the clients make)."""
    mv = memoryview(data)
    pos = 0
    while pos < len(mv):
        n = min(len(mv) - pos, MAX_SLICE)
        p = (offset + pos) % PERIOD
        if mv[pos:pos + n] != PATTERN[p:p + n]:
            return False
        pos += n
    return True


def client_context(pki):
    """An mTLS client context: the soak's CA, the dev client certificate."""
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
    ctx.load_cert_chain(os.path.join(pki, "client.pem"), os.path.join(pki, "client.key"))
    return ctx


def tls_connect(ctx, addr, timeout):
    """TCP connect + full mTLS handshake. An unclean EOF must raise (not read
    as a clean end), so a truncated body can never pass for a complete one."""
    raw = socket.create_connection(addr, timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


def abort(sock):
    """Close with a reset (SO_LINGER 0): what a crashing client does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class JsonLines:
    """Thread-safe append-only JSON-lines file, flushed per line so nothing
    recorded is lost if the process is killed."""

    def __init__(self, path):
        self._f = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def write(self, obj):
        line = json.dumps(obj, separators=(",", ":"))
        with self._lock:
            self._f.write(line + "\n")

    def close(self):
        with self._lock:
            self._f.close()


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut by a kill: the rest still counts
    except FileNotFoundError:
        pass
    return out


def die_with_parent():
    """preexec_fn for children: SIGKILL when the orchestrator dies, however
    it dies, so no soak process outlives its run. The kernel ties this to
    the *thread* that started the child: start children from threads that
    live as long as the children should."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def stop_flag(path):
    """A cooperative stop: the orchestrator creates `path` to ask a client
    process to finish the request in flight and exit."""
    return lambda: os.path.exists(path)
