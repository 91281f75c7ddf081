"""Shared client for Portcullis's TLS conformance scripts (tests/tlsconf/*.py).

Each script in this directory drives one misbehaving TLS client against a
running gateway and prints ONE JSON line on stdout saying what the client saw
(the alert, or a clean close, or the HTTP status it got); tests/tls_conformance.rs
runs the scripts against the real gateway and asserts that line together with
the gateway's log line. The client is tlslite-ng's TLSConnection, pinned to
the version in PINNED (its private _sendMsg hook is used, and private
interfaces change between releases), with one change: each outgoing handshake
message passes through a scenario's `tamper` function first, which may alter
it or ask for records to be sent before it. That is how a scenario sends a
bad CertificateVerify, a certificate that is not DER, or application data
before its Finished, with everything else in the handshake done right.

Exit status: 0 when the scenario ran (whatever the gateway did: the JSON line
says), 2 on bad arguments, 3 when tlslite-ng is missing or not the pinned
version (the Rust test fails loudly on that: CI installs it).
"""

import argparse
import json
import socket
import sys

PINNED = {"tlslite-ng": "0.8.2", "ecdsa": "0.19.2"}
INSTALL = "python3 -m pip install tlslite-ng==0.8.2 ecdsa==0.19.2"

try:
    import tlslite
    from tlslite import HandshakeSettings, TLSConnection, X509, X509CertChain
    from tlslite.constants import AlertDescription, AlertLevel, ContentType
    from tlslite.errors import (
        TLSAbruptCloseError,
        TLSLocalAlert,
        TLSRemoteAlert,
    )
    from tlslite.utils.keyfactory import parsePEMKey
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"tlsconf: tlslite-ng is not installed ({e}); run: {INSTALL}", file=sys.stderr)
    sys.exit(3)

if tlslite.__version__ != PINNED["tlslite-ng"]:
    print(
        f"tlsconf: tlslite-ng {tlslite.__version__} is installed, these scripts are "
        f"written against {PINNED['tlslite-ng']} (they hook a private method); run: {INSTALL}",
        file=sys.stderr,
    )
    sys.exit(3)

VERSIONS = {"1.2": (3, 3), "1.3": (3, 4)}


def arguments(description, versions=("1.2", "1.3")):
    """The options every scenario takes: where the gateway is, which client
    identity to present, which TLS version to speak."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--cert", required=True, help="client certificate chain (PEM)")
    p.add_argument("--key", required=True, help="client private key (PEM)")
    p.add_argument("--tls", choices=versions, required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    return p.parse_args()


def load_identity(cert_path, key_path):
    with open(cert_path) as f:
        chain = X509CertChain()
        chain.parsePemList(f.read())
    with open(key_path) as f:
        key = parsePEMKey(f.read(), private=True)
    return chain, key


class TamperingConnection(TLSConnection):
    """A tlslite-ng client connection whose outgoing messages pass through
    `tamper(conn, msg)` first. tamper may change `msg` in place and returns
    a list of messages to send before it (usually empty)."""

    def __init__(self, sock, tamper):
        TLSConnection.__init__(self, sock)
        self._tamper = tamper
        # The client's Finished verify_data of the first handshake, kept for a
        # secure renegotiation attempt (RFC 5746 renegotiation_info).
        self.client_verify_data = None

    def _sendMsg(self, msg, randomizeFirstBlock=True, update_hashes=True):
        before = self._tamper(self, msg) if self._tamper else None
        for extra in before or []:
            for result in TLSConnection._sendMsg(self, extra, randomizeFirstBlock, update_hashes):
                yield result
        for result in TLSConnection._sendMsg(self, msg, randomizeFirstBlock, update_hashes):
            yield result


class Outcome:
    """What the client saw, printed as the script's one JSON line."""

    def __init__(self, scenario, tls):
        self.fields = {
            "scenario": scenario,
            "tls": tls,
            "handshake": False,
            "alert": None,
            "alert_level": None,
            "closed": False,
            "http_status": None,
            "client_port": None,
            "steps": [],
        }

    def step(self, text):
        self.fields["steps"].append(text)

    def __setitem__(self, key, value):
        self.fields[key] = value

    def __getitem__(self, key):
        return self.fields[key]

    def alert(self, level, description):
        self.fields["alert"] = AlertDescription.toStr(description)
        self.fields["alert_level"] = AlertLevel.toStr(level)

    def print(self):
        print(json.dumps(self.fields, sort_keys=True))
        sys.stdout.flush()


def connect(args, tamper=None):
    sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    sock.settimeout(args.timeout)
    return TamperingConnection(sock, tamper)


def settings_for(tls):
    s = HandshakeSettings()
    s.minVersion = VERSIONS[tls]
    s.maxVersion = VERSIONS[tls]
    # tlslite-ng 0.8.2's client compresses its own Certificate whenever its
    # ClientHello offered compression, whether or not the server's
    # CertificateRequest did (it checks the wrong message); the gateway
    # rightly refuses that, so offer none.
    s.certificate_compression_send = []
    s.certificate_compression_receive = []
    return s


def answered(outcome, what, action):
    """Runs `action`; True when it completed. Otherwise records how the
    gateway answered (its alert, or a close without one) and returns False."""
    try:
        action()
    except TLSRemoteAlert as e:
        outcome.alert(e.level, e.description)
        outcome.step(f"{what}: alert {AlertDescription.toStr(e.description)}")
        return False
    except (TLSAbruptCloseError, ConnectionResetError, BrokenPipeError) as e:
        outcome["closed"] = True
        outcome.step(f"{what}: connection closed without an alert ({type(e).__name__})")
        return False
    except TLSLocalAlert as e:
        # tlslite itself refused something the gateway sent: not an answer
        # to our tampering, so say exactly what.
        outcome.step(f"{what}: tlslite refused the server: {e}")
        return False
    return True


def handshake(conn, args, outcome, chain, key):
    """Runs the client handshake; True when it completed on our side. In TLS
    1.3 the client is done when it has sent its Finished, before the server
    has judged its certificate: a refusal then arrives on the first read."""
    settings = settings_for(args.tls)
    # The gateway's log names each connection by peer address: this is how
    # the Rust test finds the lines about this one.
    outcome["client_port"] = conn.sock.getsockname()[1]
    done = answered(
        outcome,
        "handshake",
        lambda: conn.handshakeClientCert(chain, key, settings=settings, serverName=args.server_name),
    )
    outcome["handshake"] = done
    return done


def request(conn, outcome, path, keep_alive=False, key="http_status"):
    """One GET; records its status under `key`, or the alert/close instead."""

    def get():
        outcome[key] = http_get(conn, path, keep_alive)

    return answered(outcome, f"GET {path}", get)


def refused_handshake(args, scenario, tamper):
    """The common shape of a handshake the gateway must refuse: connect,
    handshake through `tamper`, and if our side finished, ask for a page
    (the refusal, or the page, is what the JSON line then reports)."""
    outcome = Outcome(scenario, args.tls)
    chain, key = load_identity(args.cert, args.key)
    conn = connect(args, tamper)
    if handshake(conn, args, outcome, chain, key):
        request(conn, outcome, f"/{scenario}")
    outcome.print()


def http_get(conn, path, keep_alive):
    """Sends one GET and reads its response head; returns the status code."""
    connection = "keep-alive" if keep_alive else "close"
    conn.write(
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n".encode()
    )
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = conn.read(max=65536)
        if not chunk:
            break
        data += chunk
    head = bytes(data).split(b"\r\n", 1)[0].decode("latin-1")
    parts = head.split(" ")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {head!r}")
    # Read the rest of the body (Content-Length) so the next request starts clean.
    headers, _, body = bytes(data).partition(b"\r\n\r\n")
    length = 0
    for line in headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.read(max=65536)
        if not chunk:
            break
        body += bytes(chunk)
    return int(parts[1])


def next_record(conn):
    """The next whole record from the gateway, decrypted: (content type, bytes),
    or (None, None) when the gateway closed the connection."""
    try:
        for result in conn._getNextRecord():
            if result in (0, 1):
                continue
            header, parser = result
            return header.type, bytes(parser.bytes)
    except (TLSAbruptCloseError, ConnectionResetError):
        return None, None
    return None, None


def describe_record(content_type, payload):
    if content_type is None:
        return "connection closed"
    if content_type == ContentType.alert and len(payload) == 2:
        return f"alert {AlertLevel.toStr(payload[0])} {AlertDescription.toStr(payload[1])}"
    return f"record type {content_type}, {len(payload)} bytes"


class _Capture:
    """A socket stand-in that keeps what tlslite writes instead of sending it."""

    def __init__(self):
        self.data = bytearray()

    def send(self, data):
        self.data += data
        return len(data)

    def sendall(self, data):
        self.data += data


def send_corrupted_record(conn, plaintext):
    """Encrypts `plaintext` as one application-data record under the current
    keys, flips one bit of its ciphertext, and sends it."""
    from tlslite.messages import ApplicationData

    real = conn._recordLayer._recordSocket.sock
    capture = _Capture()
    conn._recordLayer._recordSocket.sock = capture
    try:
        for _ in TLSConnection._sendMsg(conn, ApplicationData().create(bytearray(plaintext))):
            pass
    finally:
        conn._recordLayer._recordSocket.sock = real
    record = capture.data
    record[-1] ^= 0x01  # the last byte of the AEAD tag
    real.sendall(bytes(record))


def records_until_close(conn, limit=8):
    """Every record the gateway sends until it closes the connection, in words."""
    seen = []
    for _ in range(limit):
        content_type, payload = next_record(conn)
        seen.append(describe_record(content_type, payload))
        if content_type is None:
            break
    return seen
