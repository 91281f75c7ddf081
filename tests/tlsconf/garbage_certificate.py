"""A client whose certificate is not DER at all.

The Certificate message is well-formed TLS, but the one certificate in it is
a DER SEQUENCE header announcing 256 bytes followed by 16 bytes of junk. The
gateway must refuse with bad_certificate and log that the certificate is not
valid DER.
"""

from tlslite.constants import CertificateType
from tlslite.messages import Certificate, CertificateEntry
from tlslite.x509certchain import X509CertChain

import tlsconf

GARBAGE = bytearray(b"\x30\x82\x01\x00" + b"\xff" * 16)


class NotACertificate:
    """Stands in for an X509 object: tlslite only asks it for its bytes."""

    def writeBytes(self):
        return GARBAGE


def tamper(conn, msg):
    if isinstance(msg, Certificate):
        if msg.version >= (3, 4):
            entry = CertificateEntry(CertificateType.x509).create(NotACertificate(), [])
            msg.certificate_list = [entry]
        else:
            msg._cert_chain = X509CertChain([NotACertificate()])
    return []


def main():
    args = tlsconf.arguments(__doc__.splitlines()[0])
    tlsconf.refused_handshake(args, "garbage_certificate", tamper)


if __name__ == "__main__":
    main()
