"""A client that signs its CertificateVerify under a scheme the gateway did
not offer.

The gateway's CertificateRequest lists the schemes it accepts; this client
labels its (otherwise correct) CertificateVerify ecdsa_sha1, which is not
among them (SHA-1 signatures are not accepted). RFC 8446 4.4.3 and RFC 5246
7.4.8 require the scheme to be one offered: the gateway must refuse with
illegal_parameter and log the protocol violation.
"""

from tlslite.constants import HashAlgorithm, SignatureAlgorithm
from tlslite.messages import CertificateVerify

import tlsconf

ECDSA_SHA1 = (HashAlgorithm.sha1, SignatureAlgorithm.ecdsa)  # 0x0203


def tamper(conn, msg):
    if isinstance(msg, CertificateVerify):
        msg.signatureAlgorithm = ECDSA_SHA1
    return []


def main():
    args = tlsconf.arguments(__doc__.splitlines()[0])
    tlsconf.refused_handshake(args, "unoffered_scheme", tamper)


if __name__ == "__main__":
    main()
