"""A TLS 1.2 client that asks to renegotiate after its handshake, twice.

After a complete mTLS handshake and one request, the client sends a new
ClientHello over the encrypted connection: a secure renegotiation attempt
(RFC 5746, renegotiation_info carrying its first Finished). Portcullis never
renegotiates (rustls does not). Expected: the first attempt is answered with
a warning no_renegotiation alert and the connection keeps serving requests;
the second attempt ends the connection (rustls allows one refusal, then
treats more as abuse). The JSON line reports what came back after each.
"""

import os

from tlslite.constants import CipherSuite, ContentType, ExtensionType, GroupName
from tlslite.extensions import (
    RenegotiationInfoExtension,
    SignatureAlgorithmsExtension,
    SupportedGroupsExtension,
)
from tlslite.constants import SignatureScheme
from tlslite.messages import ClientHello, Finished

import tlsconf


def tamper(conn, msg):
    if isinstance(msg, Finished) and conn.client_verify_data is None:
        conn.client_verify_data = bytearray(msg.verify_data)
    return []


def renegotiation_hello(conn):
    extensions = [
        RenegotiationInfoExtension().create(conn.client_verify_data),
        SupportedGroupsExtension().create([GroupName.secp256r1, GroupName.x25519]),
        SignatureAlgorithmsExtension().create(
            [SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.rsa_pss_rsae_sha256]
        ),
    ]
    return ClientHello().create(
        (3, 3),
        bytearray(os.urandom(32)),
        bytearray(0),
        [
            CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        extensions=extensions,
    )


def attempt(conn, outcome, n):
    for _ in conn._sendMsg(renegotiation_hello(conn), update_hashes=False):
        pass
    content_type, payload = tlsconf.next_record(conn)
    seen = tlsconf.describe_record(content_type, payload)
    outcome[f"after_renegotiation_{n}"] = seen
    return content_type


def main():
    args = tlsconf.arguments(__doc__.splitlines()[0], versions=("1.2",))
    outcome = tlsconf.Outcome("renegotiation", args.tls)
    chain, key = tlsconf.load_identity(args.cert, args.key)
    conn = tlsconf.connect(args, tamper)
    if tlsconf.handshake(conn, args, outcome, chain, key) and tlsconf.request(
        conn, outcome, "/before-renegotiation", keep_alive=True
    ):
        if attempt(conn, outcome, 1) == ContentType.alert:
            # Refused with a warning: the connection must still serve.
            tlsconf.request(
                conn, outcome, "/after-renegotiation", keep_alive=True, key="http_status_after_refusal"
            )
            attempt(conn, outcome, 2)
    outcome.print()


if __name__ == "__main__":
    main()
