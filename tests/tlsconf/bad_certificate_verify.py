"""A client whose CertificateVerify signature does not verify.

The client presents its real, trusted certificate, then signs the handshake
with its real key and flips one bit of the signature on the way out. The
gateway must refuse with decrypt_error (RFC 8446 4.4.3, RFC 5246 7.2.2) and
say in its log that the CertificateVerify signature failed, not that the
certificate is untrusted: the certificate is fine, the client did not prove
it holds its key.
"""

from tlslite.messages import CertificateVerify

import tlsconf


def tamper(conn, msg):
    if isinstance(msg, CertificateVerify):
        sig = bytearray(msg.signature)
        sig[-1] ^= 0x01
        msg.signature = sig
    return []


def main():
    args = tlsconf.arguments(__doc__.splitlines()[0])
    tlsconf.refused_handshake(args, "bad_certificate_verify", tamper)


if __name__ == "__main__":
    main()
