"""A ClientHello in one record longer than a plaintext record may be.

RFC 8446 5.1 (and RFC 5246 6.2.1): a record's plaintext MUST NOT exceed 2^14
bytes, and a receiver MUST answer a longer one with record_overflow. The
ClientHello's records are read by Portcullis itself (to choose a site from
the SNI) before rustls sees them, and rustls does not check plaintext
records, so this is ours to enforce. For each body length given, one
connection sends a hello (TLS 1.2, padded to exactly that length, in one
record) and reports the first record the gateway answers with.
"""

import os
import socket

from tlslite.constants import CipherSuite, GroupName, SignatureScheme
from tlslite.extensions import (
    PaddingExtension,
    SignatureAlgorithmsExtension,
    SNIExtension,
    SupportedGroupsExtension,
)
from tlslite.messages import ClientHello

import tlsconf


def hello_of_length(body_len, server_name):
    def build(pad):
        extensions = [
            SNIExtension().create(bytearray(server_name.encode())),
            SupportedGroupsExtension().create([GroupName.secp256r1]),
            SignatureAlgorithmsExtension().create([SignatureScheme.ecdsa_secp256r1_sha256]),
            PaddingExtension().create(pad),
        ]
        hello = ClientHello().create(
            (3, 3),
            bytearray(os.urandom(32)),
            bytearray(0),
            [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
            extensions=extensions,
        )
        return bytes(hello.write())

    message = build(body_len - len(build(0)))
    assert len(message) == body_len, (len(message), body_len)
    return message


def first_record(sock):
    header = b""
    while len(header) < 5:
        chunk = sock.recv(5 - len(header))
        if not chunk:
            return "connection closed"
        header += chunk
    length = int.from_bytes(header[3:5], "big")
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return tlsconf.describe_record(header[0], body)


def main():
    p = tlsconf.argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--bodies", required=True, help="comma-separated record body lengths")
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args()
    outcome = tlsconf.Outcome("oversized_hello_record", "1.2")
    answers = {}
    ports = {}
    for body_len in [int(b) for b in args.bodies.split(",")]:
        message = hello_of_length(body_len, args.server_name)
        record = bytes([22, 3, 1]) + len(message).to_bytes(2, "big") + message
        with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
            ports[str(body_len)] = sock.getsockname()[1]
            sock.sendall(record)
            try:
                answers[str(body_len)] = first_record(sock)
            except (ConnectionResetError, socket.timeout) as e:
                answers[str(body_len)] = f"no answer ({type(e).__name__})"
    outcome["answers"] = answers
    outcome["client_ports"] = ports
    outcome.print()


if __name__ == "__main__":
    main()
